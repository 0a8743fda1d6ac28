"""Why a ``.pt`` file could not be read with ``torch.load(weights_only=True)``, in one line.

Every tensor file the package reads (model and training checkpoints, weight files) is loaded with
``weights_only=True``. A file that carries pickled Python objects is refused; PyTorch's own message
then suggests ``weights_only=False``, which would run the file's code: that hint is dropped.
"""

from __future__ import annotations


def unreadable_reason(e: BaseException) -> str:
    """One line saying why ``torch.load(weights_only=True)`` refused or failed on a file."""
    text = str(e)
    if "Weights only load failed" in text:
        if "unsupported global" in text.lower():
            return ("it holds Python objects besides tensors and plain values, and such files are never "
                    "unpickled; re-save it with tensors and plain values only")
        return "not a PyTorch tensor file (corrupt, truncated or another format)"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)
    return first.rstrip(".")

