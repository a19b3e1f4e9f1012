"""Pure statistics behind the product's verdicts, importable with no database, no settings and
no I/O: callers pass counts, rows and configuration in. Only the evaluation windows keep time,
by a clock the caller injects (`time.time` when none is given).

- `evaluation`: rolling windows per arm (`windows`), fixed-sample A/B comparisons
  (`comparison`), and the rollout's go/no-go score and gates (`score`);
- `sequential`: anytime-valid confidence sequences and mixture tests, for verdicts re-judged
  at every look; `srm`: the sample-ratio check of the split itself;
- `experiment_report`: a multi-variant experiment's per-variant figures and each challenger's
  verdict against the control, and the shadow-agreement gate;
- `cost`: the deployment's bill per served request (`usage`, `bill`, `report`);
- `drift`: input drift of live traffic against the training reference;
- `simulate`: a seeded simulation of the challenger A/B as the controller polls it
  (`python -m serving.evidence.simulate`), the source of the false-go figures.

The controllers in `serving.delivery` read counts from the shared store and call these.
"""
