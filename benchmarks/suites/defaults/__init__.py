"""Defaults: how the approximate methods' defaults were chosen, and whether they hold elsewhere.

Experiments:

* ``tuning``: each method's defaults and a grid of configurations on the setting the defaults
  were chosen on (pbmc68k members, a 400-epoch original, forget = the 22 "CD56+ NK" members):
  forget ELBO, held-out NK ELBO, their gap, the way to the retrains' forget ELBO, the other
  types' held-out ELBO (the grid and, for the critic methods, the non-member sources and seeds
  are the config's data);
* ``across``: every approximate method with its defaults on originals of other training
  lengths, other forget sets and simulated data: the other types' held-out ELBO against the
  2% goal, and whether the retain-ELBO check flags the runs that miss it.
"""

from benchmarks.suites.defaults import (  # noqa: F401  (importing them registers the experiments)
    _across,
    _across_tables,
    _tuning,
)
