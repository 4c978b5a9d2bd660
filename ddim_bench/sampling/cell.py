"""``Cell``: one sampler setting of a sweep — the single value that the grid, the store, the report and W&B share.

A cell owns its key fields and every way it is named (label, table row, W&B series and run name), so no other
module spells them.  σ̂ cells are canonical: the σ̂ row ignores η and always clips x̂0 (paper code), so they are
stored with η = 1 and ``clip_x0 = True`` however they were asked for — one computation, one key.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Cell:
    steps: int
    eta: float = 0.0
    variance: str = "eta"
    skip: str = "uniform"
    clip_x0: bool = False
    sampler: str = "ddim"

    def __post_init__(self):
        object.__setattr__(self, "steps", int(self.steps))
        object.__setattr__(self, "eta", float(self.eta))
        object.__setattr__(self, "clip_x0", bool(self.clip_x0))
        if self.variance == "hat":
            object.__setattr__(self, "eta", 1.0)
            object.__setattr__(self, "clip_x0", True)
        if self.sampler != "ddim" and self.variance != "eta":
            raise ValueError(f"variance={self.variance} is a ddim setting; sampler={self.sampler} has none")

    @classmethod
    def from_record(cls, rec: dict) -> "Cell":
        return cls(rec["steps"], rec["eta"], rec["variance"], rec["skip"], rec.get("clip_x0", False),
                   rec.get("sampler", "ddim"))

    def fields(self) -> dict:
        """The cell's part of a record's key."""
        return asdict(self)

    @property
    def deterministic(self) -> bool:
        from ddim_bench.sampling.samplers import SAMPLERS
        if self.sampler != "ddim":
            return not SAMPLERS[self.sampler].stochastic and self.eta == 0
        return self.variance == "eta" and self.eta == 0

    @property
    def row(self) -> str:
        """The table row this cell belongs to: ``η = 0``, ``σ̂``, or another sampler's name."""
        if self.sampler != "ddim":
            return self.sampler + (f" η = {self.eta:g}" if self.eta else "")
        return "σ̂" if self.variance == "hat" else f"η = {self.eta:g}"

    @property
    def row_order(self) -> tuple:
        return (self.sampler != "ddim", self.sampler, self.variance == "hat", self.eta)

    @property
    def series(self) -> str:
        """ASCII name of the row, for W&B keys."""
        if self.sampler != "ddim":
            return self.sampler + (f"-eta={self.eta:g}" if self.eta else "")
        return "sigma_hat" if self.variance == "hat" else f"eta={self.eta:g}"

    @property
    def label(self) -> str:
        return f"S={self.steps} {self.row} {self.skip}"

    @property
    def slug(self) -> str:
        """File- and run-name form: ``S10-eta0-uniform``."""
        row = self.series.replace("eta=", "eta").replace("sigma_hat", "hat")
        return f"S{self.steps}-{row}-{self.skip}"


# The sampler.* keys that define a cell (sampler.skip is checked apart: some grids take it over).
CELL_KEYS = ("name", "steps", "eta", "variance")


def cells_from_config(cfg, multirun: bool = False, given: set[str] = frozenset(), grid_name: str = "") -> list[Cell]:
    """The grid's cells — or, in a multirun job or with an empty grid, the one ``sampler.*`` cell.

    ``given``: the ``sampler.*`` keys set on the command line.  With a grid in force they would be ignored, so they
    are refused instead (one rule: ``grid=none`` or ``-m`` makes ``sampler.*`` the cell).  The same setting gives
    the same cell either way (σ̂ is canonical), so a grid run and a multirun share their records.
    """
    from ddim_bench.sampling.samplers import SAMPLERS, get_spec
    s, g = cfg.sampler, cfg.grid
    for key, name in [("sampler.name", s.name)] + [("grid.samplers", n) for n in g.samplers]:
        if name not in SAMPLERS:
            raise ValueError(f"{key}={name} is not a sampler; choose one of {', '.join(SAMPLERS)}")
    if multirun or not g.steps:
        return [single_cell(s, "skip" in given)]
    check_grid_overrides(cfg, given, grid_name)
    if "ddim" in g.samplers and not g.eta and not g.hat:
        raise ValueError("grid.eta=[] is empty, so the ddim rows have no cells; give at least one value, "
                         "e.g. grid.eta=[0.0]")
    cells = []
    for name in g.samplers:
        if name == "ddim":
            cells += [Cell(S, e, "eta", g.skip, s.clip_x0) for e in g.eta for S in g.steps]
            cells += [Cell(S, 1.0, "hat", g.skip, True) for S in g.steps] if g.hat else []
        else:
            spec = get_spec(name)
            skip = g.skip if g.skip in spec.skips else spec.default_skip
            cells += [Cell(S, 0.0, "eta", skip, False, name) for S in g.steps]
            if g.get("ddim_at_nfe") and "ddim" in g.samplers:  # DDIM η = 0 at the calls this sampler makes
                cells += [Cell(spec.nfe(S), 0.0, "eta", g.skip, s.clip_x0) for S in g.steps]
    return list(dict.fromkeys(cells))


def check_grid_overrides(cfg, given: set[str], grid_name: str) -> None:
    """A ``sampler.*`` cell setting on the command line while a grid defines the cells: refused, not ignored."""
    s, g = cfg.sampler, cfg.grid
    grid = f"grid={grid_name}" if grid_name else "the grid"
    for key in CELL_KEYS:
        if key in given:
            raise ValueError(f"sampler.{key}={s[key]} is not used: {grid} defines the cells (grid.steps="
                             f"{list(g.steps)}); add grid=none to evaluate the one sampler.* cell, or run with -m "
                             f"for one job per value")
    if "skip" in given and g.skip != s.skip:
        raise ValueError(f"sampler.skip={s.skip} is not used: {grid} sets grid.skip={g.skip}; set grid.skip={s.skip} "
                         f"instead")


def single_cell(s, skip_given: bool = False) -> Cell:
    """The one ``sampler.*`` cell; a setting its sampler does not use is refused (it would only change the key).

    A sampler that does not run on ``sampler.skip`` takes its own default skip (as in a grid), unless the skip
    was set on the command line (``skip_given``), which is then refused."""
    from ddim_bench.sampling.samplers import get_spec
    spec = get_spec(s.name)
    defaults = {"eta": 0.0, "variance": "eta", "clip_x0": False}
    for key, default in defaults.items():
        if s.name != "ddim" and key not in spec.options and s[key] != default:
            uses = ", ".join(f"sampler.{k}" for k in spec.options) or "none of eta, variance, clip_x0"
            raise ValueError(f"sampler.{key}={s[key]} is not used by sampler.name={s.name} (it uses {uses}); "
                             f"drop the override")
    skip = s.skip
    if skip not in spec.skips:
        if skip_given:
            raise ValueError(f"sampler.skip={skip} is not a grid of sampler.name={s.name}; choose one of "
                             f"{', '.join(spec.skips)}")
        skip = spec.default_skip
    return Cell(s.steps, s.eta, s.variance, skip, s.clip_x0, s.name)
