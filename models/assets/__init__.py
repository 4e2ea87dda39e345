"""Assets for the demo, the benchmarks and the tests, not product code.

TOFU question/answer loading, SmolLM2 materialisation from the installed wheel, the demo's
top-layer fine-tune, the tiny test language model, and the content-addressed cache folders they
share. Nothing under ``service/`` or ``workers/`` imports this package except the demo.
"""
