"""varc: a small VAR (next-scale prediction) model and its generative classifier.

Standalone: knows nothing of continual learning, Avalanche or result files.
"""
