"""The browser page of `cardiofair app` (gradio): draw, counterfactuals, and a synthetic dataset.

Every event is also an HTTP endpoint (``/draw``, ``/counterfactuals``, ``/browse``,
``/privacy_view``), so what a researcher clicks can be scripted and tested with
``gradio_client``. A mistake in an input (an upload that is not a mask pair, a record that is
not in the dataset) is shown on the page and the app keeps running.
"""

from __future__ import annotations

import functools
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np
import pandas as pd

from cardiofair.app.explorer import ALL_CELLS, AppError, Explorer, grey_picture, overlay_picture
from cardiofair.errors import CardiofairError
from cardiofair.prompts import UNKNOWN
from cardiofair.settings import AppSettings

FROM_DATASET = "a training record of the dataset"
FROM_UPLOAD = "an uploaded NIfTI mask pair"
FROM_DRAWN = "a new heart drawn for the prompt by the mask generator"
LEFT_OUT = "not stated (left out of the prompt)"
# 64 px pairs are shown at several times their size, pixels kept square: the browser would
# otherwise show them at their natural size, or smooth them into blur.
CSS = ".pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }"
ATTRIBUTE_LABELS = {"sex": "sex", "age": "age decade", "bmi": "BMI class (WHO)", "diagnosis": "diagnosis"}


def _shown_to_user(function: Callable) -> Callable:
    """Run an event; a :class:`CardiofairError` becomes the message the page shows (and the
    error an API client gets), not a crash."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except CardiofairError as error:
            raise gr.Error(str(error), title="cardiofair") from None
    return wrapper


def build(explorer: Explorer) -> gr.Blocks:
    """The page for one explorer."""
    info = explorer.generator.info
    defaults = explorer.generator.defaults
    attributes = list(explorer.vocabulary)
    cells = explorer.cells()
    first_records = explorer.records_in(cells[0]) if cells else []
    start_values = explorer.record_mask(first_records[0])[2] if first_records else {}

    def mask_of(source: str, record: str | None, upload: str | None, values: dict[str, str],
                seed_value: int) -> tuple[np.ndarray, float]:
        if source == FROM_DRAWN:
            return explorer.drawn_mask(values, seed_value)
        if source == FROM_UPLOAD:
            if not upload:
                raise AppError("choose a mask pair file to upload (a masks/<record>.nii.gz of a prepared dataset)")
            return explorer.uploaded_mask(upload)
        if not record:
            raise AppError("choose a training record whose mask to draw from")
        mask, spacing, _ = explorer.record_mask(record)
        return mask, spacing

    # gradio keeps a copy of every picture and download it serves: drop those older than an hour,
    # hourly and when the app stops, so synthetic images do not pile up in the temporary folder.
    with gr.Blocks(title="cardiofair explorer", analytics_enabled=False, delete_cache=(3600, 3600)) as page:
        gr.Markdown(
            f"## cardiofair explorer\nModel `{explorer.generator.model_dir.name}`: {info.get('preset', '?')} preset, "
            f"{explorer.size}x{explorer.size} px (ED, ES) pairs, {defaults.sampler} sampler. "
            f"Dataset: `{explorer.dataset or 'none (upload masks)'}`. Synthetic: `{explorer.synthetic or 'none'}`. "
            f"Judges: {explorer.judge_note}. Every image drawn here is SYNTHETIC.")
        with gr.Tab("Draw"):
            with gr.Row():
                with gr.Column(scale=1):
                    sources = [FROM_DATASET, FROM_UPLOAD] + ([FROM_DRAWN] if explorer.mask_model else [])
                    source = gr.Radio(sources, value=FROM_DATASET if cells else FROM_UPLOAD, label="mask from")
                    cell = gr.Dropdown(cells, value=cells[0] if cells else None, label="cell of the training records",
                                       visible=bool(cells))
                    record = gr.Dropdown(first_records, value=first_records[0] if first_records else None,
                                         label="training record", allow_custom_value=True, visible=bool(cells))
                    upload = gr.File(label="mask pair: a 2-frame (ED, ES) NIfTI, labels 0-3", type="filepath",
                                     visible=not cells)
                    upload_status = gr.Markdown()
                    controls = [gr.Dropdown([(v, v) for v in explorer.vocabulary[a]] + [(LEFT_OUT, UNKNOWN)],
                                            value=start_values.get(a, (explorer.vocabulary[a] or [UNKNOWN])[0]),
                                            label=ATTRIBUTE_LABELS[a]) for a in attributes]
                    seed = gr.Number(0, precision=0, label="seed")
                    guidance = gr.Slider(1.0, 10.0, value=defaults.guidance_scale, step=0.5,
                                         label="guidance scale (1 = no guidance)")
                    steps = gr.Slider(1, 100, value=defaults.steps, step=1, label="sampler steps")
                    # Only a model trained with a guide can be steered by it.
                    autoguidance = gr.Slider(1.0, 3.0, value=defaults.autoguidance, step=0.1,
                                             label="autoguidance scale (1 = off)",
                                             visible=explorer.generator.pipeline.has_guide)
                    draw_button = gr.Button("Draw", variant="primary", elem_id="draw-button")
                with gr.Column(scale=2):
                    with gr.Row():
                        ed = gr.Image(label="ED", format="png", height=256, elem_id="drawn-ed",
                                      elem_classes=["pixelated"], interactive=False)
                        es = gr.Image(label="ES", format="png", height=256, elem_id="drawn-es",
                                      elem_classes=["pixelated"], interactive=False)
                    overlay = gr.Image(label="ED | ES with the mask (LV red, myocardium green, RV blue)",
                                       format="png", height=256, elem_classes=["pixelated"], interactive=False)
                    prompt = gr.Textbox(label="prompt used", interactive=False, elem_id="drawn-prompt")
                    drawn_with = gr.Textbox(label="drawn with", interactive=False, elem_id="drawn-with")
                    readout = gr.Textbox(label="what the judges read (needs --quality)", interactive=False)
                    downloads = gr.File(label="download: image and mask NIfTI, marked SYNTHETIC",
                                        file_count="multiple", interactive=False)
        with gr.Tab("Counterfactuals"):
            gr.Markdown("The mask, seed, sampler and other attributes of the Draw tab; one attribute swept over "
                        "every value the model knows. Under each image, what the judges read in it.")
            sweepable = [a for a in attributes if explorer.vocabulary[a]]
            swept = gr.Radio([(ATTRIBUTE_LABELS[a], a) for a in sweepable], value=sweepable[0] if sweepable else None,
                             label="attribute to sweep")
            sweep_button = gr.Button("Draw the row", variant="primary", elem_id="sweep-button")
            row_gallery = gr.Gallery(label="one mask, one seed, one attribute changed", columns=4, height="auto",
                                     format="png", object_fit="contain", elem_classes=["pixelated"],
                                     elem_id="counterfactual-row")
            row_table = gr.Dataframe(label="prompts and read-outs", interactive=False, wrap=True,
                                     column_widths=["10%", "35%", "55%"])
        with gr.Tab("Synthetic dataset"):
            if explorer.synthetic_rows is None:
                gr.Markdown("Start the app with `--synthetic GENERATED_DIR` (and `--dataset`, `--quality`) to browse "
                            "a synthetic dataset.")
            else:
                with gr.Row():
                    synthetic_cell = gr.Dropdown(explorer.synthetic_cells(), value=ALL_CELLS, label="cell")
                    order = gr.Dropdown(explorer.sorts(), value=explorer.sorts()[0], label="order")
                listed = gr.Dataframe(label="synthetic records", interactive=False, max_height=320)
                chosen = gr.Dropdown([], label="synthetic record", allow_custom_value=True)
                privacy = gr.Gallery(label="synthetic record | its mask source | the nearest training image",
                                     columns=3, height="auto", format="png", object_fit="contain",
                                     elem_classes=["pixelated"], elem_id="privacy-view")

        @_shown_to_user
        def choose_cell(cell_name: str) -> Any:
            records = explorer.records_in(cell_name)
            return gr.update(choices=records, value=records[0] if records else None)

        @_shown_to_user
        def choose_record(record_id: str) -> list[Any]:
            if not record_id:
                return [gr.update() for _ in attributes]
            values = explorer.record_mask(record_id)[2]
            return [gr.update(value=values[a] if values[a] in explorer.vocabulary[a] else UNKNOWN)
                    for a in attributes]

        def choose_source(source_value: str) -> list[Any]:
            from_dataset = source_value == FROM_DATASET
            return [gr.update(visible=from_dataset and bool(cells)), gr.update(visible=from_dataset and bool(cells)),
                    gr.update(visible=source_value == FROM_UPLOAD)]

        def check_upload(path: str | None) -> str:
            if not path:
                return ""
            try:
                explorer.uploaded_mask(path)
            except CardiofairError as error:
                return f"**Cannot use this file:** {error}"
            return f"`{Path(path).name}`: a mask pair the model can draw from."

        def request(inputs: tuple[Any, ...]) -> tuple[np.ndarray, float, dict[str, str], int, Any]:
            """The mask, spacing, attribute values, seed and sampler of a draw request's inputs
            (``common`` below, in order)."""
            source_value, record_value, upload_value, *rest = inputs
            values = dict(zip(attributes, rest))
            seed_value, guidance_value, steps_value, autoguidance_value = rest[len(attributes):len(attributes) + 4]
            mask, spacing = mask_of(source_value, record_value, upload_value, values, int(seed_value or 0))
            return mask, spacing, values, int(seed_value or 0), explorer.sampler(steps_value, guidance_value,
                                                                                 autoguidance_value)

        # gradio hands its progress tracker only to a positional parameter before the inputs.
        @_shown_to_user
        def draw(progress: gr.Progress = gr.Progress(), *inputs: Any) -> tuple[Any, ...]:
            mask, spacing, values, seed_value, sampler = request(inputs)
            progress(0.0, desc="drawing one pair")
            drawing = explorer.draw(mask, values, seed_value, sampler, spacing)
            return (grey_picture(drawing.image[0]), grey_picture(drawing.image[1]), overlay_picture(drawing),
                    drawing.prompt,
                    f"seed {drawing.seed}, {drawing.sampler.describe()}; drawn in {drawing.seconds:.1f} s",
                    explorer.readout(drawing.image, drawing.mask), [str(p) for p in explorer.save(drawing)])

        @_shown_to_user
        def counterfactuals(progress: gr.Progress = gr.Progress(), *inputs: Any) -> tuple[Any, Any]:
            mask, spacing, values, seed_value, sampler = request(inputs[:-1])
            attribute = inputs[-1]
            row = explorer.sweep(mask, values, attribute, seed_value, sampler, spacing,
                                 on_drawing=lambda done, total: progress((done, total), desc="drawing the row",
                                                                         unit="pair"))
            gallery, readouts = [], []
            for value, drawing in row:
                readings, _ = explorer.judge(drawing.image, drawing.mask)
                # Under each image, the judge's reading of the swept attribute: does it follow?
                read = readings.get(attribute)
                gallery.append((overlay_picture(drawing), f"{value}: judge reads {read[0]} ({read[1]:.2f})" if read
                                else value))
                readouts.append(explorer.readout(drawing.image, drawing.mask))
            table = pd.DataFrame({attribute: [v for v, _ in row], "prompt": [d.prompt for _, d in row],
                                  "what the judges read": readouts})
            return gallery, table

        common = [source, record, upload, *controls, seed, guidance, steps, autoguidance]
        source.change(choose_source, source, [cell, record, upload], api_name=False)
        cell.change(choose_cell, cell, record, api_name=False)
        record.change(choose_record, record, controls, api_name=False)
        upload.change(check_upload, upload, upload_status, api_name=False)
        draw_button.click(draw, common, [ed, es, overlay, prompt, drawn_with, readout, downloads],
                          api_name="draw")
        sweep_button.click(counterfactuals, [*common, swept], [row_gallery, row_table], api_name="counterfactuals")

        if explorer.synthetic_rows is not None:
            @_shown_to_user
            def browse(cell_name: str, sort: str, progress: gr.Progress = gr.Progress()) -> tuple[pd.DataFrame, Any]:
                # Without quality results the first distance order measures every record: seconds.
                progress(0.0, desc="listing the synthetic records")
                table = explorer.synthetic_table(cell_name, sort)
                ids = table["record_id"].astype(str).tolist()
                return table, gr.update(choices=ids, value=ids[0] if ids else None)

            @_shown_to_user
            def show_record(record_id: str | None) -> list[tuple[np.ndarray, str]]:
                return explorer.privacy_view(record_id) if record_id else []

            for trigger in (synthetic_cell.change, order.change):
                trigger(browse, [synthetic_cell, order], [listed, chosen], api_name=False)
            page.load(browse, [synthetic_cell, order], [listed, chosen], api_name="browse")
            chosen.change(show_record, chosen, privacy, api_name="privacy_view")
    return page


def check_port(host: str, port: int) -> None:
    """Refuse a port another program holds, before the slow start."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise AppError(f"cannot listen on {host}:{port}: {error.strerror or error} (another program, perhaps "
                           f"another cardiofair app, uses that port): choose another with --port") from None


def serve(model: Path, dataset: Path | None, synthetic: Path | None, quality: Path | None, masks: Path | None,
          settings: AppSettings) -> None:
    """Load the model and data, start the page on ``settings.host:port`` and serve until Ctrl-C
    or SIGTERM; drawn pairs live in a temporary folder removed on exit."""
    check_port(settings.host, settings.port)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cardiofair-app-") as workdir:
        explorer = Explorer(model, dataset, synthetic, quality, workdir=workdir, masks=masks)
        page = build(explorer)
        # One drawing at a time: on a CPU, parallel drawings only slow each other down.
        page.queue(default_concurrency_limit=1)
        try:
            _, url, _ = page.launch(server_name=settings.host, server_port=settings.port, prevent_thread_lock=True,
                                    quiet=True, share=False, ssr_mode=False, mcp_server=False, css=CSS,
                                    allowed_paths=[workdir])
        except OSError as error:
            raise AppError(f"cannot listen on {settings.host}:{settings.port}: {error}") from None
        print(f"cardiofair app: {explorer.generator.model_dir} ready in {time.perf_counter() - started:.1f} s; "
              f"open {url} (Ctrl-C stops)", flush=True)
        # SIGTERM (a service manager, `kill`) stops the server as Ctrl-C does, so the work folder
        # is removed and the port freed; and Ctrl-C works even where the shell started the app in
        # the background, which makes Python ignore SIGINT.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        page.block_thread()
    print("cardiofair app: stopped", flush=True)
