"""The contract every multi-step model follows: :class:`MultiStepModel`.

A model is a ``tfrs.Model`` built from a :class:`~tafe_tf.features.Schema` and
a frozen hyperparameter dataclass (:class:`BaseHParams` or a subclass, defined
in :mod:`tafe_tf.hparams`). It maps the feature dict of
:func:`tafe_tf.input_pipeline.make_dataset` (ragged or padded multi-valued
fields; extra keys ignored) to ``[B, T]`` step logits
(:meth:`MultiStepModel.step_logits`, implemented by subclasses in
``_forward``), and from those to named float32 outputs ``p_<step>`` and
``q_<step>`` (:meth:`call`; two-step models also ``ctr``, ``cvr``, ``ctcvr``).
``compute_loss`` is the DTL loss (:mod:`tafe_tf.losses`) plus a model's own
term per example (``_extra_loss``, from the auxiliary tensors of
``_forward_aux``; ESCM2 and DCMT have one) reduced with
``tf.nn.compute_average_loss``, and updates :class:`tafe_tf.metrics.StepMetrics`.
Every model's networks start from :meth:`MultiStepModel.embed`: the feature
embedding, then the ``interaction`` switch (:mod:`tafe_tf.layers.cross`).

Config round trip: ``get_config()`` returns ``{"model", "hparams", "schema",
"schema_directory"}`` and ``build_model(config["model"], schema,
**config["hparams"])`` (or ``MultiStepModel.from_config(config)``) rebuilds the
same architecture; ``hparams`` holds every hyperparameter, defaults included.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple, Type

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tafe_tf import features as features_lib
from tafe_tf import losses as losses_lib
from tafe_tf import metrics as metrics_lib
from tafe_tf.hparams import BaseHParams, check_hparam_names
from tafe_tf.layers import cross as cross_lib
from tafe_tf.layers import embedding as embedding_lib
from tafe_tf.layers import initializers, probabilities, tpu_embedding

LOSS_LOG_NAMES = ("loss", "regularization_loss", "total_loss")


def _check_dot_widths(schema: features_lib.Schema, hparams: BaseHParams) -> None:
  """One-line ValueError unless every field is one width (``interaction="dot"``
  takes dot products between every pair of field embeddings)."""
  widths = embedding_lib.field_widths(schema, hparams.embedding_dim, hparams.field_embedding_dims)
  # A dense field of width 0 passes its vector through: its width is its dim.
  widths = {f.name: widths[f.name] or f.dim for f in schema.fields}
  if len(set(widths.values())) > 1:
    raise ValueError(
      f"interaction='dot' needs one width for every field (dot products of field pairs); "
      f"widths: {widths}; drop field_embedding_dims or use interaction='cross'"
    )


def _tpu_table_optimizer(hparams: BaseHParams) -> Optional[Any]:
  """The TPU embedding engine's optimizer under a TPUStrategy, else None (the
  tables are then ordinary variables trained by the model's optimizer)."""
  strategy = tf.distribute.get_strategy()
  if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
    return tf.tpu.experimental.embedding.Adam(learning_rate=hparams.tpu_embedding_learning_rate)
  return None


class MultiStepModel(tfrs.Model):
  """Base of all multi-step conversion models (see the module docstring).

  Subclasses set ``MODEL_NAME`` and ``HParams``, build their layers in
  ``__init__`` after calling ``super().__init__`` and implement ``_forward``.

  Args:
    schema: The dataset schema.
    hparams: The model's hyperparameters.
    chained: True: heads are conditional logits (p_t = q_1 ... q_t); False:
      independent entire-space logits.
    embedding_output_mode: The embedding's output the model wants (TAFE's
      field interaction takes ``FIELDS``); ``interaction="dot"`` makes it
      ``FIELDS`` too.
  """

  MODEL_NAME: ClassVar[str] = ""
  HParams: ClassVar[Type[BaseHParams]] = BaseHParams

  def __init__(
    self,
    schema: features_lib.Schema,
    hparams: BaseHParams,
    chained: bool,
    embedding_output_mode: str = embedding_lib.FLAT,
    **kwargs,
  ):
    kwargs.setdefault("name", self.MODEL_NAME or None)
    super().__init__(**kwargs)
    self.hparams = hparams
    # The same schema under both names (input_schema: what get_config saves).
    self.input_schema = schema
    self.schema = schema
    self.steps = schema.steps
    self.chained = chained
    if hparams.interaction == cross_lib.DOT:
      _check_dot_widths(schema, hparams)
      embedding_output_mode = embedding_lib.FIELDS
    self.dtl_loss = losses_lib.DTLLoss(
      num_steps=len(self.steps),
      chained=chained,
      step_weights=hparams.step_weights,
      entire_space_weight=hparams.entire_space_weight,
      conditional_weight=hparams.conditional_weight,
      conditional_normalization=hparams.conditional_normalization,
      calibration_weight=hparams.calibration_weight,
    )
    if hparams.tpu_embedding:
      self.embedding = tpu_embedding.TPUFeatureEmbedding(
        schema,
        hparams.embedding_dim,
        hparams.field_embedding_dims,
        output_mode=embedding_output_mode,
        seed=self._seed(0),
        optimizer=_tpu_table_optimizer(hparams),
        name="feature_embedding",
      )
    else:
      self.embedding = embedding_lib.FeatureEmbedding(
        schema,
        hparams.embedding_dim,
        hparams.field_embedding_dims,
        fused=hparams.fused_embedding,
        output_mode=embedding_output_mode,
        seed=self._seed(0),
        name="feature_embedding",
      )
    self.interaction = cross_lib.FeatureInteraction(
      hparams.interaction,
      hparams.cross_layers,
      hparams.cross_projection_dim,
      seed=self._seed(999),
      name="feature_interaction",
    )
    self.probabilities = probabilities.ChainedProbabilities(chained, name="probabilities")
    # Identity until tafe_tf.calibration fits it on held-out rows.
    self.calibration = probabilities.StepCalibration(len(self.steps), name="calibration")
    self.step_metrics = metrics_lib.StepMetrics(self.steps, name="step_metrics")
    # Running means of the losses over an epoch (and over a whole evaluate):
    # tfrs itself logs the last batch's loss, which made val_loss (and with it
    # the kept epoch) depend on the last validation batch alone.
    self.loss_means = metrics_lib.RunningMeans(LOSS_LOG_NAMES, name="loss_means")
    # Every value train_step/test_step return is a metric's result, which
    # Keras computes from the metric state summed over all replicas and
    # workers: each replica already holds the global value. Keras' default
    # ("auto") adds the workers' copies under MultiWorkerMirroredStrategy, so
    # a 2-worker run logged twice every value (AUC above 1) in the progress
    # bar, per-batch callbacks and epoch logs not recomputed at epoch end.
    self.distribute_reduction_method = "first"

  @classmethod
  def make_hparams(cls, **hparams: Any) -> BaseHParams:
    """``cls.HParams(**hparams)``; a name it lacks is a one-line ValueError
    listing the names it takes."""
    check_hparam_names(cls.MODEL_NAME, cls.HParams, hparams)
    return cls.HParams(**hparams)

  def _seed(self, salt: int) -> Optional[int]:
    """Seed of the ``salt``-th sublayer (None when the model is unseeded)."""
    return initializers.derive_seed(self.hparams.seed, salt)

  @tf.autograph.experimental.do_not_convert
  def preprocess(self, features: Mapping[str, Any]) -> Dict[str, Any]:
    """Raw features -> features with id lookups done (``rows/<field>`` keys).

    For ``dataset.map`` ahead of an XLA-compiled step: the model gives the
    same outputs on the result as on ``features``; the hashing, string and
    hash-table work of the lookups then stays in the input pipeline. See
    :meth:`tafe_tf.layers.embedding.FeatureEmbedding.lookup_rows`.
    """
    return self.embedding.lookup_rows(features)

  # --- forward ----------------------------------------------------------------
  # The forward methods are marked do_not_convert: nothing in them (or in the
  # layers they call, which inherit the setting) branches on tensor values, and
  # AutoGraph's source conversion of every layer was two thirds of TAFE's
  # train-step tracing time (9.3 s of 15 s; 4.6 s without it).

  def embed(self, features: Mapping[str, Any], training: bool = False) -> tf.Tensor:
    """The front end every model starts from: the feature embedding, then the
    ``interaction`` switch; flat ``[B, in]``."""
    return self.interact(self.embedding(features), training)

  def interact(self, embedded: tf.Tensor, training: bool = False) -> tf.Tensor:
    """The ``interaction`` switch (:mod:`tafe_tf.layers.cross`), the one place
    it is applied: ``[B, D]`` flat or ``[B, F, D]`` field embeddings (TAFE's
    field interaction output) -> flat ``[B, in]``."""
    del training  # the interaction layers have no dropout
    return self.interaction(embedded)

  def _forward(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """``(logits [B, T], gate weights by name)``; subclasses implement (the
    abstract method of the contract; models with loss-only tensors also
    override :meth:`_forward_aux`)."""
    raise NotImplementedError(f"{type(self).__name__} must implement _forward")

  def _forward_aux(
    self, features: Mapping[str, Any], training: bool
  ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor], Dict[str, tf.Tensor]]:
    """``_forward`` plus the auxiliary tensors :meth:`_extra_loss` needs, by
    name (ESCM2's imputed errors, DCMT's counterfactual logits); only the loss
    sees them, never ``call`` or the serving signature. Default: none."""
    logits, gates = self._forward(features, training)
    return logits, gates, {}

  def _extra_loss(
    self, labels: tf.Tensor, logits: tf.Tensor, aux: Mapping[str, tf.Tensor], training: bool
  ) -> Optional[tf.Tensor]:
    """A model's own loss term per example, float32 ``[B]``, added to the DTL
    loss before the batch reduction (None: none, the default).

    Args:
      labels: float32 ``[B, T]`` cumulative labels.
      logits: float32 ``[B, T]`` step logits.
      aux: :meth:`_forward_aux`'s auxiliary tensors.
      training: Whether this is a training step.
    """
    del labels, logits, aux, training
    return None

  @tf.autograph.experimental.do_not_convert
  def step_logits(self, features: Mapping[str, Any], training: bool = False) -> tf.Tensor:
    """Float32 ``[B, T]`` step logits (conditional when ``chained``), after
    the per-step calibration (the identity until one is fitted)."""
    return self.calibration(self.uncalibrated_step_logits(features, training))

  @tf.autograph.experimental.do_not_convert
  def uncalibrated_step_logits(
    self, features: Mapping[str, Any], training: bool = False
  ) -> tf.Tensor:
    """Float32 ``[B, T]`` step logits before the calibration."""
    logits, _ = self._forward(features, training)
    return tf.cast(logits, tf.float32)

  @tf.autograph.experimental.do_not_convert
  def gate_weights(self, features: Mapping[str, Any]) -> Dict[str, tf.Tensor]:
    """Gate weights per sample (inference mode), ``name -> [B, num_experts]``.

    Names are ``level<l>/<step>`` (the step's gate at level l),
    ``level<l>/shared`` (a shared-path gate) and, in TAFE,
    ``level<l>/<step>/mix`` (the task-specific mixing gate). Empty for models
    without gates.
    """
    _, gates = self._forward(features, False)
    return {k: tf.cast(v, tf.float32) for k, v in gates.items()}

  @tf.autograph.experimental.do_not_convert
  def outputs_from_logits(self, logits: tf.Tensor) -> Dict[str, tf.Tensor]:
    """Named float32 ``[B]`` outputs from ``[B, T]`` step logits."""
    p, q = self.probabilities(logits)
    out = {}
    for t, step in enumerate(self.steps):
      out[f"p_{step}"] = p[:, t]
      out[f"q_{step}"] = q[:, t]
    if len(self.steps) == 2:
      out["ctr"], out["cvr"], out["ctcvr"] = p[:, 0], q[:, 1], p[:, 1]
    return out

  def call(self, features: Mapping[str, Any], training: bool = False) -> Dict[str, tf.Tensor]:
    return self.outputs_from_logits(self.step_logits(features, training))

  @tf.autograph.experimental.do_not_convert
  def compute_loss(
    self, inputs: Tuple[Mapping[str, Any], Mapping[str, tf.Tensor]], training: bool = False
  ) -> tf.Tensor:
    """The DTL loss of a ``(features, labels)`` or ``(features, labels,
    sample_weight)`` batch plus the model's own term per example
    (:meth:`_extra_loss`), averaged (Keras' convention for the weights:
    ``[B]``, multiplying each example's loss; the step metrics stay
    unweighted); updates the step metrics."""
    features, labels = inputs[0], inputs[1]
    logits, _, aux = self._forward_aux(features, training)
    logits = self.calibration(tf.cast(logits, tf.float32))
    y = losses_lib.stack_labels(labels, self.steps)
    per_example = self.dtl_loss.per_example(y, logits)
    extra = self._extra_loss(y, logits, aux, training)
    if extra is not None:
      per_example += extra
    sample_weight = tf.cast(inputs[2], tf.float32) if len(inputs) > 2 else None
    loss = tf.nn.compute_average_loss(per_example, sample_weight=sample_weight)
    if not training or self.hparams.train_metrics:
      p, q = self.probabilities(logits)
      self.step_metrics.update_state(labels, p, q)
    return loss

  def train_step(self, inputs: Any) -> Dict[str, tf.Tensor]:
    """One optimizer step; logs the epoch's running mean losses.

    As ``tfrs.Model.train_step``, with two corrections: under mixed float16
    the loss is scaled for the ``LossScaleOptimizer`` that ``compile``
    installs (tfrs applies gradients of the unscaled loss, so small float16
    gradients would flush to zero), and the regularisation loss is divided by
    the replicas (their gradients are summed).
    """
    optimizer = self.optimizer
    scaling = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      objective, loss, regularization, batch = self._loss_terms(inputs, True)
      if scaling:
        objective = optimizer.get_scaled_loss(objective)
    gradients = tape.gradient(objective, self.trainable_variables)
    if scaling:
      gradients = optimizer.get_unscaled_gradients(gradients)
    optimizer.apply_gradients(zip(gradients, self.trainable_variables))
    return self._logs(loss, regularization, batch, with_step_metrics=self.hparams.train_metrics)

  def test_step(self, inputs: Any) -> Dict[str, tf.Tensor]:
    """One evaluation batch; logs running mean losses over the whole run."""
    _, loss, regularization, batch = self._loss_terms(inputs, False)
    return self._logs(loss, regularization, batch)

  def _loss_terms(
    self, inputs: Any, training: bool
  ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(objective to differentiate, DTL loss, regularisation, batch size)."""
    loss = self.compute_loss(inputs, training=training)
    regularization = tf.reduce_sum([tf.reduce_sum(extra) for extra in self.losses])
    objective = loss + tf.nn.scale_regularization_loss(regularization)
    labels = inputs[1]
    batch = tf.shape(labels[self.steps[0]])[0]
    return objective, loss, regularization, batch

  def _logs(
    self,
    loss: tf.Tensor,
    regularization: tf.Tensor,
    batch: tf.Tensor,
    with_step_metrics: bool = True,
  ) -> Dict[str, tf.Tensor]:
    """Updates the loss means (per example) and returns the logs."""
    # compute_average_loss divides this replica's loss sum by the global
    # batch (local batch x replicas): times replicas is the local mean.
    local_mean = loss * tf.distribute.get_strategy().num_replicas_in_sync
    self.loss_means.update_state(
      (local_mean, regularization, local_mean + regularization),
      sample_weight=tf.cast(batch, tf.float32),
    )
    shown = self.metrics if with_step_metrics else self.loss_means.metrics
    return {metric.name: metric.result() for metric in shown}

  def summary(self, *args: Any, **kwargs: Any) -> None:
    """Keras' summary; also after ``fit``, which reaches the layers through
    :meth:`step_logits` rather than ``__call__``, so Keras never marked the
    model built (the summary then refused: "not yet been built")."""
    if not self.built and self.variables:
      self.built = True
    return super().summary(*args, **kwargs)

  # --- config -----------------------------------------------------------------

  def get_build_config(self) -> Dict[str, Any]:
    """Keras' build record. Its default (input shapes) cannot describe a dict
    of ragged features; the schema can, so building is a dummy-batch call
    (:meth:`build_from_config`). Without it ``tf.keras.models.load_model``
    of a ``.keras`` file met unbuilt layers (``expected 0 variables``)."""
    return {"dummy_batch_of_schema": True}

  def build_from_config(self, config: Dict[str, Any]) -> None:
    del config  # everything needed is in the schema
    self.build_variables()

  def build_variables(self) -> None:
    """Creates every variable with one dummy batch of the schema: those of
    ``call`` and the loss-only layers (ESCM2's imputation towers, ...) that
    ``call`` skips. Needed before ``compile``'s optimizer first applies
    gradients (it must see every variable) and before restoring weights."""
    batch = features_lib.dummy_batch(self.input_schema)
    self(batch, training=False)
    self._forward_aux(batch, False)

  def get_config(self) -> Dict[str, Any]:
    return {
      "model": self.MODEL_NAME,
      "hparams": self.hparams.to_json(),
      "schema": self.input_schema.to_json(),
      "schema_directory": self.input_schema.directory,
    }

  @classmethod
  def from_config(
    cls, config: Dict[str, Any], custom_objects: Optional[Dict[str, Any]] = None
  ) -> "MultiStepModel":
    del custom_objects
    schema = features_lib.Schema.from_json(
      config["schema"], directory=config.get("schema_directory")
    )
    model_cls = _model_classes().get(config["model"])
    if model_cls is None:
      raise ValueError(f"unknown model {config['model']!r}")
    return model_cls(schema, **config["hparams"])


def _model_classes() -> Dict[str, Type[MultiStepModel]]:
  """Every defined model class by ``MODEL_NAME`` (subclasses, recursively)."""
  out, pending = {}, [MultiStepModel]
  while pending:
    cls = pending.pop()
    pending.extend(cls.__subclasses__())
    if cls.MODEL_NAME:
      out[cls.MODEL_NAME] = cls
  return out
