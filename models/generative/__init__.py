"""Inference-time unlearning for generative models (the second way lethe forgets; the first is
exact retraining, `models.sisa`).

The model's weights stay frozen. A forget spec compiles into rules (`rules`); a verifier scores
each response against them (`verifier`, with `matching` for identifiers and key spans,
`specificity` for how much a span proves, `attribution` for whom a response is about, and
`embedder` for semantic similarity); a flagged response is regenerated with feedback (spans
banned from decoding by `banning`, named in an instruction) up to a budget B, then refused
(`refinement`) or refused at once by a calibrated early exit. `probes` provides calibration
data (by probe family); λ, B and the exit are calibrated in models/conformal.

`generator` wraps a local Hugging Face causal LM and `qa_data` turns question/answer pairs into
training examples; the demo, benchmark and test models are built in `models.assets`. Modules
are imported directly (no re-exports here), so that importing `rules` or `verifier` does not
pull in torch and transformers.
"""
