"""Former name of `hstu_tutorial.memory` (the memory levers), kept so that older imports still work."""

from hstu_tutorial.memory import (  # noqa: F401
    MIB,
    SavedBytes,
    __all__,  # noqa: F401
    accumulated_backward,
    blocks_of,
    enable_recompute,
    is_recomputing,
    saved_activation_bytes,
)
