"""The demo of a trained model: a Gradio app (direct class probabilities, the reasoning chain streamed as it is
generated) and the Hugging Face Space it ships as.

* :mod:`.app` -- the Gradio Blocks app (``build_demo``) and its launcher (``launch_demo``, what ``rdmldg demo``
  and a Space's ``app.py`` call); the one module that imports Gradio, an optional dependency
  (``pip install "rdmldg_hf[demo]"``);
* :mod:`.streaming` -- the reasoning chain of ``DGClassifier`` streamed token by token (``stream_reasoning``);
* :mod:`.rendering` -- the chain as the page shows it (stages, conclusion);
* :mod:`.facts` -- the model's card facts shown beside it; :mod:`.examples` -- example images per domain;
* :mod:`.space` -- the Space folder (``write_space``) and its upload (``push_space``).
"""
