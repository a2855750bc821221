"""How a model bolt maps tuples to model inputs and model outputs to tuples: pure logic.

:func:`plan` checks a bolt's ``feeds`` and ``predictions`` against a model's
inputs and outputs (at ``prepare``, and for every model update) and returns a
:class:`Plan`; :meth:`Plan.arrays` turns a batch of input tuples into the
model's input arrays, :meth:`Plan.rows` a batch of outputs into the values each
output tuple carries. Every error names the bolt, the field, the model input or
output and what it expected.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MODEL_VERSION_FIELD = "model_version"  # an output field that carries the version that scored the tuple


class ModelError(Exception):
    """A model, or a bolt's mapping onto it, cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: its name, numpy dtype name and shape (None: any size;
    the first dimension is the batch)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True)
class Feed:
    """A model input and the tuple field(s) it is read from: one field (its value is one row of
    the input), or several (their values, in order, make a row)."""

    spec: TensorSpec
    fields: tuple[str, ...]
    stacked: bool  # several fields, one value each, make the row

    def row_shape(self) -> tuple[int | None, ...]:
        return self.spec.shape[1:]


class BadRow(Exception):
    """One tuple's values do not fit the model; the others of its batch are fine."""


@dataclass(frozen=True)
class Plan:
    component: str
    feeds: tuple[Feed, ...]
    outputs: tuple[str, ...]  # the bolt's declared output fields, in order
    predictions: Mapping[str, str]  # output field -> model output name

    def arrays(self, tuples: Sequence[Any]) -> dict[str, np.ndarray]:
        """The model's input arrays for ``tuples``. Raises :class:`BadRow` (naming the first
        bad tuple's position) when a value is missing or of the wrong shape or type."""
        out: dict[str, np.ndarray] = {}
        for feed in self.feeds:
            try:
                if feed.stacked:
                    values: list[Any] = [[t[f] for f in feed.fields] for t in tuples]
                else:
                    f = feed.fields[0]
                    values = [t[f] for t in tuples]
                array = np.asarray(values, dtype=feed.spec.dtype)
            except (KeyError, ValueError, TypeError):
                raise BadRow(self._first_bad(feed, tuples)) from None
            if not _fits(array.shape[1:], feed.row_shape()):
                raise BadRow(self._first_bad(feed, tuples))
            out[feed.spec.name] = array
        return out

    def check_row(self, tup: Any) -> str | None:
        """Why ``tup`` cannot be fed to the model, or None if it can."""
        for feed in self.feeds:
            problem = self._row_problem(feed, tup)
            if problem is not None:
                return problem
        return None

    def _first_bad(self, feed: Feed, tuples: Sequence[Any]) -> str:
        for tup in tuples:
            problem = self._row_problem(feed, tup)
            if problem is not None:
                return problem
        return (f"bolt '{self.component}': the rows for model input {feed.spec.describe()} "
                f"differ in shape from one tuple to the next")

    def _row_problem(self, feed: Feed, tup: Any) -> str | None:
        spec = feed.spec
        for f in feed.fields:
            try:
                tup[f]
            except KeyError:
                return (f"bolt '{self.component}': a tuple from '{tup.source}' stream '{tup.stream}' has no field "
                        f"'{f}' (it has {', '.join(tup.fields) or 'none'}); field '{f}' feeds model input "
                        f"{spec.describe()}")
        raw = [tup[f] for f in feed.fields] if feed.stacked else tup[feed.fields[0]]
        shown = ", ".join(feed.fields)
        try:
            value = np.asarray(raw, dtype=spec.dtype)
        except (ValueError, TypeError) as e:
            return (f"bolt '{self.component}': field{'s' if feed.stacked else ''} {shown} of a tuple from "
                    f"'{tup.source}' hold{'' if feed.stacked else 's'} {_short(raw)}, which is not {spec.dtype} "
                    f"data for model input {spec.describe()} ({e})")
        if not _fits(value.shape, feed.row_shape()):
            return (f"bolt '{self.component}': field{'s' if feed.stacked else ''} {shown} of a tuple from "
                    f"'{tup.source}' give a row of shape {list(value.shape)}; model input {spec.describe()} "
                    f"takes rows of shape {_dims(feed.row_shape())}")
        return None

    def rows(self, tuples: Sequence[Any], results: Mapping[str, np.ndarray], version: int) -> list[list[Any]]:
        """The output values of each tuple: predictions from ``results`` (row i for tuple i),
        ``model_version`` if declared, every other field copied from the input tuple."""
        columns: dict[str, list[Any]] = {}
        for field_name, output in self.predictions.items():
            array = results[output]
            if len(array) != len(tuples):
                raise ModelError(f"bolt '{self.component}': model output '{output}' has {len(array)} rows for a "
                                 f"batch of {len(tuples)}; a model bolt needs one output row per input row")
            columns[field_name] = array.tolist()
        n = len(tuples)
        out: list[list[Any]] = [[] for _ in range(n)]
        for name in self.outputs:
            column = columns.get(name)
            if column is not None:
                for i in range(n):
                    out[i].append(column[i])
            elif name == MODEL_VERSION_FIELD:
                for row in out:
                    row.append(version)
            else:
                for i in range(n):
                    out[i].append(tuples[i][name])
        return out


def plan(component: str, inputs: Sequence[TensorSpec], model_outputs: Sequence[TensorSpec],
         feeds: Mapping[str, str | Sequence[str]], predictions: Mapping[str, str],
         outputs: Sequence[str], max_batch: int, model_name: str,
         sources: Mapping[tuple[str, str], Sequence[str]] | None = None) -> Plan:
    """Check the mapping of a bolt onto a model; see the module docstring. ``sources`` (source
    component, stream) -> fields, if given, is checked to hold every field the bolt reads."""
    by_name = {i.name: i for i in inputs}
    listed = "; ".join(i.describe() for i in inputs) or "none"
    for name in feeds:
        if name not in by_name:
            raise ModelError(f"bolt '{component}': feeds names model input '{name}', which {model_name} does not "
                             f"have; its inputs are {listed}")
    plan_feeds = []
    for spec in inputs:
        source = feeds.get(spec.name)
        if source is None:
            raise ModelError(f"bolt '{component}': model input {spec.describe()} of {model_name} is fed by no "
                             f"field; add '{spec.name}' to the bolt's feeds (model input -> field or list of fields)")
        if not spec.shape:
            raise ModelError(f"bolt '{component}': model input {spec.describe()} of {model_name} is a scalar; a "
                             f"model bolt feeds batches, so every input needs a first (batch) dimension")
        first = spec.shape[0]
        if first is not None and first != max_batch and not (first == 1 and max_batch == 1):
            raise ModelError(f"bolt '{component}': model input {spec.describe()} of {model_name} has a fixed batch "
                             f"dimension of {first}, but max_batch is {max_batch}; export the model with a dynamic "
                             f"first dimension (dynamic_axes / dynamic_shapes), or set max_batch = {first}")
        fields: tuple[str, ...]
        if isinstance(source, str):
            fields, stacked = (source,), False
        else:
            fields, stacked = tuple(source), True
            if not fields or not all(isinstance(f, str) and f for f in fields):
                raise ModelError(f"bolt '{component}': feeds of model input '{spec.name}' must be a field name or "
                                 f"a list of field names, got {source!r}")
            row = spec.shape[1:]
            if len(row) != 1 or (row[0] is not None and row[0] != len(fields)):
                raise ModelError(f"bolt '{component}': model input {spec.describe()} of {model_name} is fed from "
                                 f"{len(fields)} fields ({', '.join(fields)}), one value each, which makes rows of "
                                 f"shape [{len(fields)}]; the model takes rows of shape {_dims(row)}")
        plan_feeds.append(Feed(spec, fields, stacked))
    out_names = {o.name for o in model_outputs}
    if not predictions:  # output fields named like a model output carry it
        predictions = {o.name: o.name for o in model_outputs if o.name in outputs}
        if not predictions:
            raise ModelError(f"bolt '{component}': none of the output fields {list(outputs)} is named like an "
                             f"output of {model_name} ({'; '.join(o.describe() for o in model_outputs)}); set "
                             f"predictions (output field -> model output) to say which fields carry which output")
    for field_name, output in predictions.items():
        if output not in out_names:
            raise ModelError(f"bolt '{component}': predictions maps field '{field_name}' to model output '{output}', "
                             f"which {model_name} does not have; its outputs are "
                             f"{'; '.join(o.describe() for o in model_outputs)}")
        if field_name not in outputs:
            raise ModelError(f"bolt '{component}': predictions names field '{field_name}', which is not among the "
                             f"bolt's outputs {list(outputs)}; declare it in outputs")
    copied = [f for f in outputs if f not in predictions and f != MODEL_VERSION_FIELD]
    for (source, stream), source_fields in (sources or {}).items():
        fields_of = tuple(source_fields)
        for feed in plan_feeds:
            for f in feed.fields:
                if f not in fields_of:
                    raise ModelError(f"bolt '{component}': field '{f}' feeds model input {feed.spec.describe()}, but "
                                     f"stream '{stream}' of '{source}' has no field '{f}' (its fields: "
                                     f"{', '.join(fields_of) or 'none'})")
        for f in copied:
            if f not in fields_of:
                raise ModelError(f"bolt '{component}': output field '{f}' is not a prediction, so it is copied from "
                                 f"the input, but stream '{stream}' of '{source}' has no field '{f}' (its fields: "
                                 f"{', '.join(fields_of) or 'none'}); map it to a model output in predictions, or "
                                 f"declare it upstream")
    return Plan(component, tuple(plan_feeds), tuple(outputs), dict(predictions))


def _fits(shape: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected))


def _dims(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
