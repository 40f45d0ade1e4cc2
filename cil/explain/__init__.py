"""The faithfulness experiment behind ``cil explain``.

- ``faithfulness.py``: model-agnostic insertion/deletion curves and their AUC, baseline saliency
  maps (random, input gradient, occlusion), and the VAR classifier as a judge and a gradient
  baseline;
- ``cnn.py``: the baseline CNN (``cil.models`` 'cnn'), trained jointly on all classes;
- ``experiment.py``: the explanation grid of a VAR classifier and the faithfulness table of
  every map, judged by the VAR classifier and by the CNN, with their figures and CSV files.

The token-wise mutual information maps themselves are ``varc.explain``. Importing this package
imports nothing else (torch loads with the modules above).
"""

# The maps the experiment can score, in the order of its tables.
METHODS = ("tmi", "tmi_null", "contrast", "random", "cnn_gradient", "cnn_occlusion", "var_gradient")
