"""Analyses that open a trained model up. Each module exposes ``run(run_dir_or_model, ...)``
returning a result dataclass of numpy arrays with ``.plot()`` and ``.save(run_dir)``; arrays go
to RUN/analysis/<name>.npz and figures to RUN/figures/<name>*.png.

* ``logit_lens``     -- what each hidden state decodes to, at every checkpoint
* ``causal_tracing`` -- which hidden states the prediction depends on (Wang et al.; ROME)
* ``patching``       -- batched activation patching over hook names (TransformerLens shapes)
* ``circuit``        -- the two above read together across training, as a short summary
"""
