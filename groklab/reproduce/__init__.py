"""``groklab reproduce STUDY``: published findings checked by training the runs they rest on.

    groklab reproduce --list
    groklab reproduce composition --scale cpu --out repro/composition

A study (``base.Study``) names its runs and its claims; ``runner.reproduce`` trains, analyzes
and evaluates them; ``studies/`` holds one module per study. CLI level: it drives training and
analyses, and nothing below the CLI imports it.
"""
