"""cardiofair: fairness-aware data augmentation for cardiac MRI with conditioned diffusion."""

from cardiofair.threads import apply_thread_policy

__version__ = "0.1.0"

# Before any module of the package imports torch or numpy (cardiofair.threads imports neither).
apply_thread_policy()
