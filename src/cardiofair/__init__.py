"""cardiofair: fairness-aware data augmentation for cardiac MRI with conditioned diffusion."""

__version__ = "0.1.0"
