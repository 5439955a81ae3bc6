"""Training and evaluation: baselines on an indexed dataset and sanity checks for any pipeline.

torch is imported here and in ``dataaudit.embed`` only; the rest of dataaudit stays light.
"""
