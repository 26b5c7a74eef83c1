"""Miniworld presets: the scale of the miniature pretraining run.

The step layout mirrors OLMo-7B's first run as OLMoMIA uses it (Kim et al. 2024): members
are the steps [0, T1) (OLMo-7B: 100k), non-members [T2, T3) (400k..450k), and the target
checkpoints are T1, 2·T1, 3·T1 and T2 (100k/200k/300k/400k); the final checkpoint at T3
(one epoch) is saved too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from anatomy.io import InputError


@dataclass(frozen=True)
class Preset:
    name: str
    vocab_size: int
    seq_len: int
    batch_size: int
    member_end: int  # T1
    steps: int  # T3, one epoch
    d_model: int
    n_layers: int
    n_heads: int
    lr: float
    # target token shares of the regular documents (planted text adds to its category)
    mixture: dict[str, float]
    # membership plants: each passage is a standalone document repeated k times in [0, T1)
    mia_counts: tuple[int, ...]
    mia_per_count: int
    # memorization plants: (passages, copies, window of steps ending at T2)
    mem_dense: tuple[int, int, int]
    # (passages, copies) spread uniformly over the whole run
    mem_spread: tuple[int, int]
    # (passages, copies, window of the last steps of the run)
    mem_late: tuple[int, int, int]
    n_templates: int  # of each kind (incrementing, repeating), spread over the run
    pool_size: int  # documents per category in the SlimPajama-layout pools
    pool_rates: dict[str, float] = field(default_factory=dict)  # fraction of trained docs
    n_token_files: int = 4
    # near-duplicated plants, in the dense window (anatomy/world/synthetic.py): (passages of
    # each kind, fuzzy copies, exact canonical copies <= 5): corpus passages to recollect and
    # incrementing tables to reconstruct
    mem_fuzzy: tuple[int, int, int] = (0, 0, 0)

    @property
    def nonmember_start(self) -> int:  # T2
        return 4 * self.member_end

    @property
    def checkpoints(self) -> tuple[int, ...]:
        t1 = self.member_end
        return (t1, 2 * t1, 3 * t1, 4 * t1, self.steps)

    @property
    def extra_instances(self) -> int:
        """Instances beyond the trained epoch (OLMo's epoch is slightly more than 450k steps)."""
        return self.batch_size // 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(nonmember_start=self.nonmember_start, checkpoints=list(self.checkpoints))
        return d


_MIXTURE = {"code": 0.40, "docs": 0.22, "data": 0.14, "readme": 0.10, "license": 0.08,
            "reference": 0.06}
_RATES = {"code": 0.7, "docs": 0.5, "data": 0.3, "readme": 0.6, "license": 0.4,
          "reference": 0.5}

PRESETS = {
    # the tests' world: a narrower model, batch 8 and more steps than the first tiny world
    # (d 256, batch 16, 180 steps), which memorized nothing; within 3 minutes on 2 cores
    "tiny": Preset(name="tiny", vocab_size=4096, seq_len=128, batch_size=8, member_end=200,
                   steps=1000, d_model=128, n_layers=4, n_heads=4, lr=4e-3, mixture=_MIXTURE,
                   mia_counts=(1, 2, 16, 48), mia_per_count=10, mem_dense=(3, 192, 260),
                   mem_spread=(4, 16), mem_late=(2, 48, 20), n_templates=8, pool_size=60,
                   pool_rates=_RATES, mem_fuzzy=(3, 187, 5)),
    # seconds to build: for smoke tests of the builder itself (too small to learn much)
    "micro": Preset(name="micro", vocab_size=1024, seq_len=128, batch_size=8, member_end=4,
                    steps=40, d_model=64, n_layers=2, n_heads=2, lr=2e-3, mixture=_MIXTURE,
                    mia_counts=(1, 4), mia_per_count=4, mem_dense=(2, 16, 8),
                    mem_spread=(2, 12), mem_late=(1, 8, 4), n_templates=2, pool_size=10,
                    pool_rates=_RATES, mem_fuzzy=(1, 8, 2)),
    "small": Preset(name="small", vocab_size=4096, seq_len=128, batch_size=16, member_end=200,
                    steps=900, d_model=256, n_layers=4, n_heads=4, lr=2e-3, mixture=_MIXTURE,
                    mia_counts=(1, 2, 4, 8, 16, 32), mia_per_count=16, mem_dense=(5, 160, 240),
                    mem_spread=(8, 32), mem_late=(3, 128, 60), n_templates=24, pool_size=300,
                    pool_rates=_RATES, mem_fuzzy=(7, 155, 5)),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InputError(None, f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]
