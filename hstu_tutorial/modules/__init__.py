"""Model modules: input preprocessor, STU layer, HSTU encoder and the SASRec baseline."""

from hstu_tutorial.modules.hstu_transducer import (
    HSTUEncoder,
    count_parameters,
    hstu_encoder,
    saved_activation_bytes,
)
from hstu_tutorial.modules.preprocessors import InputPreprocessor, l2_normalize
from hstu_tutorial.modules.sasrec import SASRecBlock, SASRecEncoder, sasrec_encoder
from hstu_tutorial.modules.stu import STULayer
from hstu_tutorial.ops.jagged_tensors import JaggedLayout

__all__ = [
    "HSTUEncoder",
    "InputPreprocessor",
    "JaggedLayout",
    "SASRecBlock",
    "SASRecEncoder",
    "STULayer",
    "count_parameters",
    "hstu_encoder",
    "l2_normalize",
    "sasrec_encoder",
    "saved_activation_bytes",
]
