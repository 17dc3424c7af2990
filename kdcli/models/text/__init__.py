"""Text classifiers for `task=classify` on labelled texts: token ids [B, T] -> class logits
[B, K], with the padding id masked."""
