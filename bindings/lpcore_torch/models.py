"""The models ``lpcore-train`` trains, for any user of the library:
:func:`build_model` (an MLP, or a small CNN for images and sequences) and
:func:`split_masks` (a trained model's plain ``state_dict`` and its masks)."""
from __future__ import annotations


def build_model(kind, n_in, shape, n_classes):
    """``kind="mlp"``: Flatten, two hidden layers of 256 (ReLU), the
    classifier.  ``kind="cnn"``: for images (``shape`` = (1, H, W)) two 3x3
    convolutions of 32 and 64 channels with max pooling (2 when H >= 16),
    for sequences (``shape`` = (1, L)) two width-5 convolutions with pooling
    2, then a hidden layer of 128 and the classifier.  ``n_in``: features per
    sample; ``shape``: one sample's shape."""
    from torch import nn
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 256), nn.ReLU(), nn.Linear(256, 256),
                             nn.ReLU(), nn.Linear(256, n_classes))
    if len(shape) == 3:
        side_in = shape[1]
        pool = 2 if side_in >= 16 else 1
        side = side_in // pool // pool
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(pool),
                             nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(),
                             nn.Linear(128, n_classes))
    length = shape[1]
    return nn.Sequential(nn.Conv1d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Flatten(), nn.Linear(64 * (length // 4), 128), nn.ReLU(),
                         nn.Linear(128, n_classes))


def split_masks(state):
    """(the plain model's state_dict, the masks): a trained model's state
    without the ``weight_mask`` buffers of :class:`lpcore_torch.SparseTrainer`
    (its masked weights are already exact zeros), and those masks, keyed by
    the weight they mask (``"1.weight"``)."""
    model = {k: v for k, v in state.items() if not k.endswith("weight_mask")}
    masks = {k[:-len("_mask")]: v for k, v in state.items() if k.endswith("weight_mask")}
    return model, masks
