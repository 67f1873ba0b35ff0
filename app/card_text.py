"""What the app says about a model, read from its card: metrics, evaluation, input, training.

Plain Python (pandas), no Streamlit. Evaluations are the card's typed
:class:`~model.card.Evaluation` entries, patient-disjoint ones first
(:meth:`~model.card.ModelCard.ordered_evaluations`), each headed by
:attr:`~model.card.Evaluation.heading`.

Example:
    >>> from model.card import Evaluation, ModelCard
    >>> card = ModelCard(name="demo", software={}, evaluation={
    ...     "paper": Evaluation("paper", metrics={"accuracy": 0.99}),
    ...     "patient": Evaluation("patient", patient_disjoint=True,
    ...                           metrics={"accuracy": 0.851, "auc": 0.912})})
    >>> evaluation_summary(card)
    'patient-disjoint test (patient): Accuracy 85.1%, AUC 0.912'
    >>> table = metrics_table(card)
    >>> table.columns.tolist()
    ['patient: patient-disjoint', 'paper: test patients also in training']
    >>> table.to_dict("index")  # doctest: +NORMALIZE_WHITESPACE
    {'Accuracy': {'patient: patient-disjoint': '85.1%',
                  'paper: test patients also in training': '99.0%'},
     'AUC (ROC)': {'patient: patient-disjoint': '0.912',
                   'paper: test patients also in training': '-'}}

(``software={}`` only keeps the examples from importing Keras to record versions.)
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from model.card import ModelCard
from model.trust import assess_model

METRIC_NAMES: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "AUC (ROC)",
    "sensitivity": "Sensitivity (malignant recall)",
    "specificity": "Specificity (benign recall)",
    "f1": "F1 (malignant)",
    "precision": "Precision (malignant)",
    "patient_accuracy": "Patient-level accuracy",
    "patient_recognition_rate": "Patient recognition rate",
}
"""Display names of the metrics, in the order the metrics table lists them."""

LEAK_NOTE = (
    "Paper-protocol numbers come from the paper's split (train on 100X/200X/400X, test on "
    "40X): every test patient's tissue is also in training, so they overstate how the model "
    "does on new patients. The patient-disjoint numbers are the honest estimate."
)

MISSING = "-"
"""A metric that an evaluation did not record."""


def format_metric(name: str, value: Any) -> str:
    """AUC-like values as 0.000, rates in [0, 1] as percentages, anything else as text;
    an undefined value (None, NaN) as ``n/a``.

    Example:
        >>> format_metric("auc", 0.91234), format_metric("accuracy", 0.8512)
        ('0.912', '85.1%')
        >>> format_metric("patients", 16), format_metric("f1", None), format_metric("x", "n/a")
        ('16.000', 'n/a', 'n/a')
    """
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    if "auc" in name.lower() or not 0.0 <= value <= 1.0:
        return f"{value:.3f}"
    return f"{value:.1%}"


def metrics_table(card: ModelCard) -> pd.DataFrame:
    """Metrics (rows) by evaluation protocol (columns), formatted; side by side when a card
    has both a patient-disjoint and a paper-protocol evaluation (see the module example).
    Spreads and intervals are left to the card's raw JSON."""
    evaluations = [evaluation for _, evaluation in card.ordered_evaluations()]
    names: list[str] = []
    for evaluation in evaluations:
        names.extend(metric for metric in evaluation.metrics if metric not in names)
    names.sort(key=lambda m: (list(METRIC_NAMES).index(m) if m in METRIC_NAMES else 99, m))
    columns = {
        evaluation.heading: [
            format_metric(metric, evaluation.metrics[metric])
            if metric in evaluation.metrics
            else MISSING
            for metric in names
        ]
        for evaluation in evaluations
    }
    index = [METRIC_NAMES.get(metric, metric.replace("_", " ")) for metric in names]
    return pd.DataFrame(columns, index=pd.Index(index, name="metric"))


def evaluation_summary(card: ModelCard) -> str:
    """One line on how the model was evaluated, for the always-visible header.

    Example:
        >>> from model.card import Evaluation
        >>> evaluation_summary(ModelCard(name="n", software={}))
        'not evaluated (no test results in its model card)'
        >>> paper = ModelCard(name="p", software={}, evaluation={"paper": Evaluation("paper")})
        >>> evaluation_summary(paper)
        'paper protocol only, whose test patients also appear in training: no metrics recorded'
    """
    evaluations = card.ordered_evaluations()
    if not evaluations:
        return "not evaluated (no test results in its model card)"
    name, evaluation = evaluations[0]
    metrics = evaluation.metrics
    shown = [
        f"{_short_metric_name(metric)} {format_metric(metric, metrics[metric])}"
        for metric in ("accuracy", "balanced_accuracy", "auc")
        if metric in metrics
    ]
    numbers = ", ".join(shown) if shown else "no metrics recorded"
    if evaluation.patient_disjoint:
        return f"patient-disjoint test ({name}): {numbers}"
    return f"{name} protocol only, whose test patients also appear in training: {numbers}"


def _short_metric_name(metric: str) -> str:
    """``"auc"`` -> ``"AUC"`` (the display name without its explanation in brackets)."""
    return METRIC_NAMES.get(metric, metric).split(" (")[0]


def input_description(card: ModelCard) -> str:
    """How an image becomes the network's input.

    Example:
        >>> input_description(ModelCard(name="demo", software={}))
        '144x96 px RGB (width x height), bilinear resize, resnet50_caffe normalisation'
    """
    spec = card.config.input
    stain = (
        f", {spec.stain_reference.display_name} stain normalisation"
        if spec.stain_reference is not None
        else ""
    )
    return (
        f"{spec.width}x{spec.height} px RGB (width x height), {spec.interpolation} resize"
        f"{stain}, {spec.normalisation} normalisation"
    )


def stain_text(card: ModelCard) -> str:
    """What the model does about stain colour, for its card page.

    Example:
        >>> stain_text(ModelCard(name="demo", software={}))[:40]
        'None: images reach the network with the '
    """
    reference = card.config.input.stain_reference
    if reference is None:
        return (
            "None: images reach the network with the colours they were scanned with. Images "
            "stained or scanned unlike the training images may be misread."
        )
    return (
        f"{reference.describe()}. Every image is mapped onto these reference colours before "
        "the network sees it (in training, here and in batch scoring); an image whose stains "
        "cannot be estimated (mostly glass, grayscale, tiny) is passed unchanged and its "
        "result says so."
    )


def stain_colours(card: ModelCard) -> pd.DataFrame:
    """The reference colours of the card's stain normaliser (empty without one).

    Example:
        >>> from dataclasses import replace
        >>> from model.stain import default_reference
        >>> card = ModelCard(name="demo", software={})
        >>> card.config = replace(card.config, input=card.config.input.with_stain_reference(
        ...     default_reference("macenko")))
        >>> stain_colours(card)["colour"].tolist()
        ['haematoxylin', 'eosin']
    """
    reference = card.config.input.stain_reference
    colours = reference.reference_colours() if reference is not None else {}
    return pd.DataFrame(
        [
            {"colour": name, "hex": "#{:02x}{:02x}{:02x}".format(*rgb), "RGB": str(rgb)}
            for name, rgb in colours.items()
        ],
        columns=["colour", "hex", "RGB"],
    )


def training_description(card: ModelCard) -> list[tuple[str, str]]:
    """The card's training facts as (label, value) pairs, skipping those not recorded.

    Example:
        >>> training_description(ModelCard(name="demo", software={}))
        [('Trained', 'NO: head never fitted, outputs meaningless'), ('Initial weights', 'random')]
    """
    training = card.training
    facts = [
        ("Trained", "yes" if training.trained else "NO: head never fitted, outputs meaningless"),
        ("Data", training.dataset),
        ("Protocol", training.protocol),
        ("Preset", training.preset),
        ("Initial weights", training.initial_weights),
        ("Frozen layers", training.freeze),
        ("Epochs", training.epochs),
        ("Steps per epoch", training.steps_per_epoch),
        ("Batch size", training.batch_size),
        ("Optimizer", training.optimizer),
        ("Learning rate", training.learning_rate),
        ("Loss", training.loss),
        ("Augmentation", training.augmentation),
        ("Seed", training.seed),
        ("Notes", training.notes),
    ]
    return [(label, str(value)) for label, value in facts if value not in (None, "")]


def short_date(iso_time: str) -> str:
    """A card's ISO time as date and minutes (in UTC when it has a zone; unchanged if odd).

    Example:
        >>> short_date("2026-03-01T12:30:00+00:00"), short_date("not a date")
        ('2026-03-01 12:30 UTC', 'not a date')
    """
    try:
        moment = pd.Timestamp(iso_time)
    except (ValueError, TypeError):
        return iso_time
    if moment.tzinfo is not None:
        moment = moment.tz_convert("UTC")
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


TRUST_ADVICE: dict[str, str] = {
    "evaluated": "Results are shown with their labels.",
    "weak": "Every result carries a warning: do not rely on them.",
    "unproven": "No class label is shown, and its probabilities are not "
    "meaningful (a research view in the sidebar can show them).",
}


def trust_text(card: ModelCard) -> tuple[str, str, str]:
    """(level, title, sentence) of the model's evidence level, for the header and the card
    page.

    Example:
        >>> level, title, sentence = trust_text(ModelCard(name="untrained"))
        >>> level, title
        ('unproven', 'Not shown to be better than chance')
        >>> sentence.startswith("This model's card says it was never trained.")
        True
    """
    trust = assess_model(card)
    sentence = f"This model's {_subject(trust.reason)}. {TRUST_ADVICE[trust.level]}"
    return trust.level, trust.title, sentence


def _subject(reason: str) -> str:
    """``"its AUC ..."`` -> ``"AUC ..."``, ``"it has no ..."`` -> ``"card shows no ..."``."""
    if reason.startswith("its "):
        return reason[len("its ") :]
    if reason.startswith("it has no "):
        return "card has no " + reason[len("it has no ") :]
    return reason


def calibration_text(card: ModelCard) -> str:
    """How the served probability relates to the network's output.

    Example:
        >>> print(calibration_text(ModelCard(name="old")))
        uncalibrated: the network's own sigmoid output (the card has no calibration)
    """
    if card.calibration is None:
        return "uncalibrated: the network's own sigmoid output (the card has no calibration)"
    return card.calibration.describe()


def applicability_text(card: ModelCard) -> str:
    """What the "like the training images?" check compares against.

    Example:
        >>> applicability_text(ModelCard(name="old"))
        'not available: the card has no summary of the training images'
    """
    summary = card.applicability
    if summary is None:
        return "not available: the card has no summary of the training images"
    return (
        f"features of {summary.n_train} training images ({summary.fitted_on}); an image is "
        f"unusual above {summary.unusual_above:.2f} and unlike the training images above "
        f"{summary.unlike_above:.2f} (about 1 is typical)"
    )
