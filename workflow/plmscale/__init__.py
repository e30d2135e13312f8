"""plmscale: a compute-optimal scaling study of protein language models (Cheng et al., NeurIPS 2024)."""

__version__ = "0.1.0"
