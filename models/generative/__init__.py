"""Inference-time unlearning for generative models (DESIGN.md, "Two ways to forget", item 2).

The model's weights stay frozen. A forget spec compiles into rules (`rules`); a verifier scores
each response against them (`verifier`, with `matching` for identifiers and key spans and
`embedder` for semantic similarity); a flagged response is regenerated with feedback (spans
banned from decoding by `banning`, named in an instruction) up to a budget B, then refused
(`refinement`). `probes` provides calibration data; λ and B are calibrated in models/conformal.

`generator` wraps a local Hugging Face causal LM and `qa_data` turns question/answer pairs into
training examples; the demo, benchmark and test models are built in `models.assets`. Modules
are imported directly (no re-exports here), so that importing `rules` or `verifier` does not
pull in torch and transformers.
"""
