"""clirkit: cross-lingual IR experiment runner (OPTICAL distillation, indexing, evaluation, attacks).

The house, top floor first; a module imports only from floors below it (no circles):

==========================  ===================================================================
``cli``                     Typer app: every option generated from a config; one ``run_<cmd>``
``experiment`` ``launch``   TOML grids as a dependency graph; local processes or Slurm jobs
``reproduce`` ``expected``  re-run a finished directory from scratch; pinned expected scores
``runs`` ``report``         read experiment directories; the grid report (tables, comparisons)
``index`` ``evaluate``      the stages: corpus index, eval (TREC run + measures),
``attack/`` ``fuse``        random and greedy attacks, rank fusion of finished runs
``distill/``                students, teacher cache, the training loop, DDP, checkpoints
``retrieval/``              one ``Searcher`` interface: dense (FAISS), MaxSim, BM25, fusion
``models`` ``encode_pool``  load encoders (bundled alias, folder, hub id, distill run); workers
``losses`` ``ot``           methods that know no pipeline: OT/MSE losses, Sinkhorn,
``lexicon`` ``perturb/``    bilingual lexicons, query perturbations,
``analysis`` ``text``       the BM25 analyzer, words and grapheme clusters
``measures`` ``tables``     ir_measures, paired tests, CIs; console/CSV/Markdown tables, plots
``data/``                   canonical BEIR formats, one module per source, guarded downloads
``rundir`` ``config``       the experiment directory; typed configs (the one source of options)
``device`` ``seeding``      device and precision resolved once; local random generators
``errors`` ``registry``     one-line user errors (exit 2); name registries
``progress``                the rich consoles and progress bar
==========================  ===================================================================

See README.md ("The house") for what each package owns.
"""

__version__ = "0.1.0"
