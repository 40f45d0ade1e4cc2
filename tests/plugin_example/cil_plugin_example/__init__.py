"""An example third-party package that adds a strategy to varc-cil."""
