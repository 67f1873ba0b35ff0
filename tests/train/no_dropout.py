"""``python -m tests.train.no_dropout ARGS``: ``python -m train.run ARGS`` with the head's
dropout rate set to 0, for the exact comparison of a multi-worker run with a single process.

Why: under ``MultiWorkerMirroredStrategy`` every replica draws its dropout mask for its own
share of the batch from the same seed state, so the masks are not those one process draws
for the whole batch; that is the one expected difference between the two runs. Without
dropout they must agree to float rounding (all-reduce order), which checks the sharding,
the variable initialisation and the gradient all-reduce. Everything else is the real
program: only the default of ``ModelConfig.dropout`` changes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import model.config


@dataclass(frozen=True)
class ModelConfigWithoutDropout(model.config.ModelConfig):
    dropout: float = 0.0


def main() -> int:
    # train.run imports ModelConfig when a run starts, so it picks this one up.
    model.config.ModelConfig = ModelConfigWithoutDropout  # type: ignore[misc]
    from train.run import main as train_main

    return train_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
