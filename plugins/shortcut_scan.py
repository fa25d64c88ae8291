"""The shortcut scan: which classes the model decides by a cue that is not the object, over a whole labeled set
(Clever Hans; Lapuschkin et al. 2019). Candidate regions come from attribution maps (outside the object mask where
masks are given, else spectral relevance analysis); each is tested counterfactually against random windows of its
size (``toolkit.shortcuts``). A finding names the region, shows it, and gives both effects with their intervals;
no finding says what was tested and how large an effect these pictures could have detected."""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.evidence import mean_interval, shown_interval, wilson
from viz_server.rendering import captioned_grid, overlay
from viz_server.techniques import Artifact, Context, Param, Result, Technique, headline, validate_params
from viz_server_plugins.toolkit import shortcuts
from viz_server_plugins.toolkit.attribution import class_attributions
from viz_server_plugins.toolkit.set_predictions import decide, set_predictions

MIN_PICTURES = 8
"""Fewest correctly predicted pictures of a class to scan it (half find the candidate, half test it)."""
MIN_CLUSTER_SHARE = 0.2
"""A SpRAy cluster is a candidate only with at least this share of the class's maps..."""
CONSISTENT = 0.5
"""...and when at least this share of its members put their own most relevant window on the cluster's window..."""
SPECIFIC = 2.0
"""...and when the class's maps put at least this many times the other classes' mass there (without masks, a
window every class's maps share is where the objects sit, not a cue of one class)."""


class ShortcutScan(Technique):
    name = "shortcut_scan"
    title = "Shortcut scan"
    family = "attribution"
    tasks = ("classification",)
    suites = ("dataset",)
    inputs = ("dataset",)
    expected_cost = 4.0
    summary = "Which classes the model decides by a cue that is not the object, each candidate region tested by removing and pasting it."
    params = (
        Param("method", "str", "gradcam", "The class attribution whose maps are scanned (an installed one: gradcam, saliency, guided_backprop ...)."),
        Param("region", "float", 0.25, "Side of the windows tested, as a share of the image's side.", minimum=0.0625, maximum=0.5),
        Param(
            "per_class",
            "int",
            48,
            "Most correctly predicted pictures used per class: half find its candidate, half test it.",
            minimum=MIN_PICTURES,
            maximum=400,
        ),
        Param("level", "float", 0.01, "Significance level of a finding, divided by the number of candidates tested.", minimum=1e-4, maximum=0.1),
    )

    def run(self, ctx: Context, params: dict) -> Result:
        found = set_predictions(ctx)
        stream, model, spec = ctx.pictures, ctx.model, ctx.model.spec
        assert stream is not None  # set_predictions refuses a run without a set
        technique, settings = self._method(ctx, params)
        side = max(1, round(params["region"] * shortcuts.GRID))
        rng = np.random.default_rng(ctx.seed)
        with_masks = all(stream.has_mask)
        partial = (
            []
            if with_masks or not any(stream.has_mask)
            else [f"Object masks were given for {sum(stream.has_mask)} of {len(stream)} pictures; the scan needs them for all, so it ran without them."]
        )
        classes, scanned, skipped, unjudged = found.classes, {}, [], []
        present = sorted(set(found.labels.tolist()))
        for step, class_index in enumerate(present):
            ctx.check_cancelled()
            chosen = np.flatnonzero(found.correct & (found.labels == class_index))
            if len(chosen) < MIN_PICTURES:
                skipped.append(f"{classes[class_index]}: cannot judge, only {len(chosen)} correctly predicted pictures (the scan needs {MIN_PICTURES}).")
                continue
            chosen = rng.permutation(chosen)[: params["per_class"]]
            screen, held = np.sort(chosen[0::2]), np.sort(chosen[1::2])
            grid_maps, masks_grid, exemplars, settings = self._maps(ctx, technique, settings, class_index, screen, settle=not scanned)
            scanned[class_index] = {"screen": screen, "held": held, "maps": grid_maps, "masks": masks_grid, "exemplars": exemplars}
            ctx.progress(step + 1, len(present), f"maps of {classes[class_index]}")
        for entry in scanned.values():
            entry["candidates"] = self._candidates(entry, side, with_masks, spec.height, spec.width)
        if not with_masks:
            for entry in scanned.values():
                entry["candidates"] = self._specific(entry, scanned, side)
        tested = sum(len(entry["candidates"]) for entry in scanned.values())
        level = params["level"] / max(len(scanned), tested, 1)
        sentences, rows, tiles, findings = (
            [],
            [["class", "pictures (find / test)", "outside the object", "window (rows, columns)", "removal flips", "paste converts", "p", "verdict"]],
            [],
            [],
        )
        for class_index, entry in scanned.items():
            name = classes[class_index]
            outside = self._outside(entry, scanned) if with_masks else None
            own_chunk = stream.take(entry["held"])
            others_pool = np.flatnonzero(found.correct & (found.labels != class_index))
            others_chunk = stream.take(np.sort(rng.permutation(others_pool)[: len(entry["held"])])) if len(others_pool) else None
            own = spec.model_to_unit(own_chunk.images.numpy())
            others = spec.model_to_unit(others_chunk.images.numpy()) if others_chunk is not None else own[:0]
            own_masks = np.stack(own_chunk.masks) if with_masks else None
            other_masks = np.stack(others_chunk.masks) if with_masks and others_chunk is not None else None

            def predict(unit: np.ndarray) -> np.ndarray:
                return decide(model, spec.unit_to_model(np.clip(unit, 0, 1)).astype(np.float32))

            def measure(box, seed, class_index=class_index, own=own, others=others, own_masks=own_masks, other_masks=other_masks):
                return shortcuts.effects(predict, class_index, own, others, box, seed, own_masks, other_masks)

            results = [
                shortcuts.permutation_test(measure, box, spec.height, spec.width, level, ctx.seed + class_index) for box, _why, _cell in entry["candidates"]
            ]
            verdict, sentence = self._judge(name, entry, results, level, outside)
            sentences.append(sentence)
            best = min(results, key=lambda test: test.p_value) if results else None
            if verdict == "finding":
                findings.append(name)
            elif verdict == "cannot judge":
                unjudged.append(name)
            rows.append(self._row(name, entry, outside, best, verdict))
            tiles.extend(self._tiles(ctx, name, entry, best, verdict, with_masks))
            ctx.progress(len(rows) - 1, len(scanned), f"tested {name}")
        if not with_masks:
            sentences.append(
                "Without object masks a candidate is a region where a class's maps agree across pictures; where the objects of a class always sit "
                "in one place, that region may be the object itself. Give masks (NAME.mask.png) to tell them apart."
            )
        judged = len(scanned) - len(unjudged)
        left = [*(name.split(":")[0] for name in skipped), *unjudged]
        note = (", ".join(findings) if findings else f"none found among the {judged} classes judged") + (f"; not judged: {', '.join(left)}" if left else "")
        figure = (
            headline(len(findings), "classes decided by a cue other than the object", "lower", note=note, count=judged)
            if judged
            else headline(
                None,
                "classes decided by a cue other than the object",
                "lower",
                note=f"no class could be judged (each needs {MIN_PICTURES} correctly predicted pictures, and a window off the object on {shortcuts.MIN_ELIGIBLE})",
            )
        )
        artifacts = [Artifact("shortcuts.csv", "the shortcut scan, class by class", kind="table", rows=rows, group="shortcuts")]
        if tiles:
            artifacts.append(
                Artifact(
                    "regions.png",
                    "each class's mean map with the window tested outlined; exemplars of every finding",
                    data=captioned_grid(tiles, columns=5),
                    group="shortcuts",
                )
            )
        return Result(
            artifacts=artifacts,
            metrics={
                "verdict": sentences + skipped,
                "findings": findings,
                "method": technique.name,
                "level": level,
                "masks": with_masks,
                "headline": {"shortcut_classes": figure},
            },
            caveats=[
                *partial,
                f"Maps: {technique.title} with its default settings; windows of {params['region']:.3f} of the image side; significance {level:.3g} per candidate ({params['level']} over {max(len(scanned), tested, 1)} candidates or classes).",
            ],
        )

    # ---- steps -----------------------------------------------------------------------------------------
    @staticmethod
    def _method(ctx: Context, params: dict):
        installed = {technique.name: technique for technique in class_attributions(ctx.model.spec.task)}
        technique = installed.get(params["method"])
        if technique is None:
            raise UserError(f"{params['method'][:40]} is not an installed class attribution for this model; choose among {', '.join(installed)}.")
        settings = validate_params(technique.params, {"sanity_check": False, "faithfulness": False, "smooth_samples": 0})
        return technique, settings

    @staticmethod
    def _maps(ctx: Context, technique, settings: dict, class_index: int, indices: np.ndarray, settle: bool):
        """Grid maps of the class's attribution on these pictures, their masks on the grid (or None), up to four
        exemplars (display picture, map at input resolution), and the settings (settled here when ``settle``)."""
        grids, masks, exemplars = [], [], []
        for chunk in ctx.pictures.chunks(32, indices):
            objective = ctx.objective(f"index:{class_index}")
            with torch.no_grad():
                objective.resolve(ctx.model.module(chunk.images))
            if settle:  # choices such as Grad-CAM's layer are made once, on the first pictures, for every class
                settings, _why = technique.settled_params(ctx.model, chunk.images, objective, settings)
                settle = False
            maps = technique.maps(ctx.model, chunk.images, objective, settings, ctx.seed)
            grids.append(shortcuts.pooled(maps))
            if all(mask is not None for mask in chunk.masks):
                masks.append(shortcuts.pooled(np.stack(chunk.masks), normalize=False))
            if len(exemplars) < 4:
                display = ctx.model.spec.to_display(chunk.images.numpy())
                exemplars.extend(zip(display[: 4 - len(exemplars)], maps[: 4 - len(exemplars)]))
        return np.concatenate(grids), (np.concatenate(masks) if len(masks) == len(grids) and masks else None), exemplars, settings

    @staticmethod
    def _candidates(entry: dict, side: int, with_masks: bool, height: int, width: int) -> list:
        """(box, why) for each window to test: outside the object (masks), or consistent SpRAy clusters."""
        maps = entry["maps"]
        if with_masks and entry["masks"] is not None:
            outside = (maps * (1 - entry["masks"])).mean(0)
            # only windows that stay off the object on enough of these pictures can be tested on the held-out ones
            clear = (shortcuts.window_sums(entry["masks"], side) == 0).sum(0) >= shortcuts.MIN_ELIGIBLE
            sums = shortcuts.window_sums(outside, side)
            row, column = np.unravel_index(int(np.argmax(np.where(clear, sums, -np.inf) if clear.any() else sums)), sums.shape)
            row, column = int(row), int(column)
            entry["mean"] = outside
            return [(shortcuts.to_box(row, column, side, height, width), "most attribution outside the object", (row, column))]
        entry["mean"] = maps.mean(0)
        labels = shortcuts.spectral_clusters(maps.reshape(len(maps), -1))
        entry["clusters"] = int(labels.max()) + 1
        candidates = []
        for cluster in np.unique(labels):
            members = maps[labels == cluster]
            if len(members) < max(4, MIN_CLUSTER_SHARE * len(maps)):
                continue
            row, column, _mass = shortcuts.best_window(members.mean(0), side)
            window = shortcuts.Box(row, column, side, side)
            own = [shortcuts.best_window(member, side) for member in members]
            agreeing = np.mean([window.overlap(shortcuts.Box(r, c, side, side)) > 0 for r, c, _ in own])
            box = shortcuts.to_box(row, column, side, height, width)
            if agreeing >= CONSISTENT and all(box.overlap(other) < 0.5 for other, _, _ in candidates):
                candidates.append((box, f"a cluster of {len(members)} of {len(maps)} maps, {agreeing:.0%} of them most relevant there", (row, column)))
        return candidates

    @staticmethod
    def _specific(entry: dict, scanned: dict, side: int) -> list:
        """Without masks: the candidates whose window holds ``SPECIFIC`` times more of the class's mass than of the
        other classes'; the others are recorded in ``entry["shared"]``."""
        others = [other["maps"] for other in scanned.values() if other is not entry]
        kept, entry["shared"] = [], []
        for box, why, (row, column) in entry["candidates"]:
            own = float(shortcuts.window_sums(entry["maps"], side)[:, row, column].mean())
            theirs = float(np.mean([shortcuts.window_sums(maps, side)[:, row, column].mean() for maps in others])) if others else 0.0
            if own >= SPECIFIC * theirs:
                kept.append((box, f"{why}; {own:.2f} of its maps' mass against {theirs:.2f} for the other classes", (row, column)))
            else:
                entry["shared"].append((box, own, theirs))
        return kept

    @staticmethod
    def _outside(entry: dict, scanned: dict) -> tuple[float, tuple[float, float] | None, float]:
        """(the class's mean share of attribution outside the object, its 95% interval, the other classes' mean)."""
        own = (entry["maps"] * (1 - entry["masks"])).sum((1, 2))
        others = np.concatenate(
            [(other["maps"] * (1 - other["masks"])).sum((1, 2)) for other in scanned.values() if other is not entry and other["masks"] is not None]
            or [np.array([])]
        )
        return float(own.mean()), mean_interval(own), float(others.mean()) if others.size else float("nan")

    @staticmethod
    def _judge(name: str, entry: dict, results: list, level: float, outside) -> tuple[str, str]:
        where = ""
        if outside is not None:
            interval = f" (95% CI {shown_interval(*outside[1])})" if outside[1] else ""
            where = f"; attribution outside the object {outside[0]:.2f}{interval} of its maps (other classes {outside[2]:.2f})"
        if not results:
            if entry.get("shared"):
                box, own, theirs = entry["shared"][0]
                return "none", (
                    f"{name}: no candidate region: where its maps agree (rows {box.top}-{box.top + box.height}, columns {box.left}-{box.left + box.width}) "
                    f"the other classes' maps sit too ({own:.2f} against {theirs:.2f} of the mass): most likely where the objects are, not a cue of this class."
                )
            pictures = len(entry["maps"])
            if pictures < 2 * 8:
                reason = f"its {pictures} maps are too few to cluster (16 are needed), so nothing was tested"
            else:
                reason = f"none of the {entry.get('clusters', 1)} cluster(s) of its {pictures} maps puts its mass in one place, so nothing was tested"
            return "none", f"{name}: no candidate region: {reason}."
        test = min(results, key=lambda item: item.p_value)
        box, effects = test.box, test.effects
        why = next(why for candidate, why, _ in entry["candidates"] if candidate == box)
        rows, columns = f"{box.top}-{box.top + box.height}", f"{box.left}-{box.left + box.width}"
        if effects.removal_pictures < shortcuts.MIN_ELIGIBLE:
            return "cannot judge", (
                f"{name}: cannot judge the window at rows {rows}, columns {columns} ({why}): only {effects.removal_pictures} of the held-out pictures "
                f"leave it off the object (the test needs {shortcuts.MIN_ELIGIBLE}){where}."
            )
        removal, paste = _share(effects.flipped, effects.removal_pictures), _share(effects.converted, effects.paste_pictures)
        control_removal = float(np.median([control.removal for control in test.controls])) if test.controls else float("nan")
        control_paste = float(np.median([control.paste for control in test.controls])) if test.controls else float("nan")
        if test.p_value < level and effects.removal > 0 and effects.paste > 0:
            cue = "a cue outside the object" if outside is not None else "what lies in one region of its pictures"
            return "finding", (
                f"{name} is decided in part by {cue}: the window at rows {rows}, columns {columns} ({why}). Removing it flips {removal} of the class's "
                f"correct pictures; pasting it turns {paste} of other classes' pictures into {name}; random windows of its size: {control_removal:.3f} "
                f"and {control_paste:.3f} (median of {len(test.controls)}; p = {test.p_value:.3g} < {level:.3g}){where}."
            )
        tested = (
            f"{name}: no cue found. The window at rows {rows}, columns {columns} ({why}) was tested on {effects.removal_pictures} + "
            f"{effects.paste_pictures} pictures: removing it flipped {removal}, pasting it converted {paste}, not more than random windows of its "
            f"size (p = {test.p_value:.2g}, {len(test.controls)} controls)."
        )
        detectable = test.detectable(level)
        if detectable is None:
            return "none", f"{tested} Random windows of its size already change every picture, so no effect on these pictures could have shown{where}."
        removal_bound = max(detectable[0], 1 / max(effects.removal_pictures, 1))  # one picture is the least any effect can be
        paste_bound = max(detectable[1], 1 / max(effects.paste_pictures, 1))
        return "none", (
            f"{tested} To be found, a cue there would have had to flip more than about {removal_bound:.2f} of the class's pictures and convert more "
            f"than {paste_bound:.2f} of the others' (from {len(test.controls)} controls; at least that){where}."
        )

    @staticmethod
    def _row(name, entry, outside, test, verdict) -> list:
        pictures = f"{len(entry['screen'])} / {len(entry['held'])}"
        share = f"{outside[0]:.3f} (others {outside[2]:.3f})" if outside is not None else "—"
        if test is None:
            return [name, pictures, share, "—", "—", "—", "—", "no candidate"]
        box, effects = test.box, test.effects
        return [
            name,
            pictures,
            share,
            f"{box.top}-{box.top + box.height}, {box.left}-{box.left + box.width}",
            f"{effects.flipped}/{effects.removal_pictures}",
            f"{effects.converted}/{effects.paste_pictures}",
            f"{test.p_value:.2g}",
            {"finding": "FINDING", "cannot judge": "cannot judge"}.get(verdict, "no finding"),
        ]

    @staticmethod
    def _tiles(ctx: Context, name: str, entry: dict, test, verdict: str, with_masks: bool) -> list:
        grid = entry.get("mean", entry["maps"].mean(0))
        height, width = ctx.model.spec.height, ctx.model.spec.width
        upsampled = np.kron(grid, np.ones((-(-height // grid.shape[0]), -(-width // grid.shape[1]))))[:height, :width]
        tiles = [
            (
                _outlined(overlay(entry["exemplars"][0][0], upsampled), test.box if test else None),
                f"{name}: mean map{' (outside the object)' if with_masks else ''}",
            )
        ]
        if verdict == "finding":
            tiles += [(_outlined(overlay(picture, values), test.box), f"{name}: exemplar") for picture, values in entry["exemplars"]]
        return tiles


def _share(part: int, whole: int) -> str:
    """``9 of 49 (95% CI 0.100-0.314)``."""
    interval = wilson(part, whole)
    return f"{part} of {whole}" + (f" (95% CI {shown_interval(*interval)})" if interval else "")


def _outlined(picture: np.ndarray, box) -> np.ndarray:
    """``picture`` (H x W x 3 uint8) with ``box`` drawn as a one-pixel yellow outline."""
    if box is None:
        return picture
    out = picture.copy()
    bottom, right = min(box.top + box.height, out.shape[0]) - 1, min(box.left + box.width, out.shape[1]) - 1
    colour = np.array([255, 220, 0], np.uint8)
    out[box.top, box.left : right + 1] = out[bottom, box.left : right + 1] = colour
    out[box.top : bottom + 1, box.left] = out[box.top : bottom + 1, right] = colour
    return out


@hookimpl
def register_techniques():
    return [ShortcutScan()]
