"""tilt: exact optima of RL and on-policy self-distillation on enumerable rollout spaces.

The data flows one way::

    graphs -> space -> policy -> context (demonstrations, context models)
           -> optimal (RL, SD, tilt score) -> measures -> compare / train CLIs
"""

__version__ = "0.1.0"
