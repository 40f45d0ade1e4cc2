"""varc-cil: class-incremental learning protocols, baselines and the VAR generative classifier.

Importing this package is cheap: torch and avalanche are imported only where they are used.
"""

__version__ = "0.1.0"
