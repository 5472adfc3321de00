"""``clirkit distill``: train a foreign-language student encoder from a frozen English teacher on bitext.

The method is OPTICAL (Huang, Yu, Allan, "Improving Cross-lingual Information Retrieval on
Low-Resource Languages via Optimal Transport Distillation", WSDM 2023, arXiv:2301.12566): the
student's token embeddings of the foreign sentence are aligned to the teacher's token embeddings
of the English sentence by an entropic optimal-transport plan; the sentence-level MSE baseline is
Reimers & Gurevych, "Making Monolingual Sentence Embeddings Multilingual using Knowledge
Distillation", EMNLP 2020 (arXiv:2004.09813). The losses themselves live in
:mod:`clirkit.losses`. The package, one idea a module:

* :mod:`~clirkit.distill.pairs` -- the bitext pairs (English for the teacher, foreign for the
  student) and their on-the-fly perturbation (``--augment``);
* :mod:`~clirkit.distill.cache` -- the teacher's outputs for the English side, computed once;
* :mod:`~clirkit.distill.students` -- the students (``copy``, ``static``, a model folder),
  registered by name: the place to add a new kind of student;
* :mod:`~clirkit.distill.transfer` -- the ``transfer`` student: the teacher's transformer with a
  foreign vocabulary, its embeddings initialised from the teacher's by bitext co-occurrence;
* :mod:`~clirkit.distill.objective` -- the loss built from the configuration, uniform or idf
  token weights;
* :mod:`~clirkit.distill.trainer` -- the training loop (AdamW/Adam, linear warmup and decay,
  clipping);
* :mod:`~clirkit.distill.dev` -- dev loss and dev mate retrieval;
* :mod:`~clirkit.distill.checkpoint` -- the best checkpoint, the resumable state, bit-exact resume;
* :mod:`~clirkit.distill.ddp` -- multi-process (torchrun, DDP) training;
* :mod:`~clirkit.distill.curves` -- ``metrics/training.csv`` and ``plots/training.png``;
* :mod:`~clirkit.distill.run` -- :func:`run_distill`, the command.

Files of a run (see GUIDE.md, "The experiment directory")::

    checkpoint/            best student by dev RR@10 (a sentence-transformers folder, safetensors)
    last/model/ last/state.pt   the latest resumable state (model, optimizer, scheduler, RNG, step)
    tokenizer/tokenizer.json    the trained WordPiece tokenizer (static student)
    checkpoint/transfer.json    how the input embeddings were initialised (transfer student)
    metrics/training.csv   step, epoch, loss and its parts, lr, pairs/s, dev loss and metrics
    plots/training.png

Teacher outputs for the English side (token embeddings without special tokens, in float16, their
token ids, and sentence embeddings) are computed once and cached by content hash under
``$CLIRKIT_CACHE`` (default ``experiments/cache``), as are trained tokenizers.
"""

# Students defined in modules of their own register themselves on import: import them here.
from clirkit.distill import transfer  # noqa: F401  (registers --student transfer)
from clirkit.distill.run import run_distill

__all__ = ["run_distill"]
