"""Text tasks: sequence classification and causal language modeling."""

from flashdist.text.causal_lm import CausalLM
from flashdist.text.classification import TextClassifier

__all__ = ["CausalLM", "TextClassifier"]
