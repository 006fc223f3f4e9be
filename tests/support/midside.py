"""A separation engine that lives in the tests: mid/side, added the way any new
model family is (docs/architecture.md, "Add a model family").

This module is the whole family; ``registry.register(MidSideEngine())`` is its
one registry line (the tests call it in a fixture and unregister afterwards;
the app's own families are registered at the end of app/models/registry.py).
Stems: ``mid`` = (L + R) / 2 in both channels and ``side`` = (L - R) / 2 in the
left channel and its opposite in the right, so the two add back up to the
input. No weights; one option, ``side_gain``, scales the side stem.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.models.engines import Option, SeparationEngine, SeparationInput, Separator, model_entry

STEMS = ["mid", "side"]


class MidSideEngine(SeparationEngine):
    name = "midside"
    label = "Mid/side"
    OPTIONS = (
        Option(
            "side_gain",
            "number",
            "Scale of the side stem (1: the stems add up to the input).",
            default=1.0,
            minimum=0.0,
            maximum=4.0,
        ),
    )

    def catalogue(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            model_entry(
                self,
                "midside",
                description="Mid/side split: what both channels share, and what differs.",
                stems=STEMS,
                available=True,
                downloadable=False,
                needs_weights=False,
                options=self.OPTIONS,
            )
        ]

    def names(self, config: dict[str, Any]) -> set[str]:
        return {"midside"}

    def preload(self, name: str, config: dict[str, Any]) -> None:
        """No weights: nothing to load."""

    def prepare(
        self,
        name: str,
        options: dict[str, Any],
        source: SeparationInput,
        config: dict[str, Any],
        report: Any,
    ) -> Separator:
        rate = int(source.info.get("sample_rate") or 44100)
        gain = float(options["side_gain"])

        def separate(window: np.ndarray, progress: Callable[[float], None]) -> np.ndarray:
            left, right = window[0], window[1]
            mid = (left + right) / 2
            side = gain * (left - right) / 2
            progress(1.0)
            return np.stack([np.stack([mid, mid]), np.stack([side, -side])])

        # Always decoded as stereo: a mono input has no side (it comes out silent).
        return Separator(separate, rate, 2, list(STEMS), "cpu")
