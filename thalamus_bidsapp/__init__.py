"""Thalamus segmentation benchmark for multiple sclerosis, as a BIDS App.

Participant level: reorient, brain-mask, register FLAIR and R1 maps to T1w,
segment the thalamus with several methods and write BIDS derivatives.
Group level: agreement with manual masks and clinical models.
"""

__version__ = "0.1.0"

from thalamus_bidsapp.errors import ThalamusError

__all__ = ["ThalamusError", "__version__"]
