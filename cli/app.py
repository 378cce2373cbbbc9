"""rsseg app."""

from __future__ import annotations

import socket

import click
from click.core import ParameterSource

from rsseg.cli.params import FiniteFloat
from rsseg.errors import ConfigError

#: ports tried after a busy default port
PORT_TRIES = 20


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``port`` at every address of ``host`` now. Like
    Streamlit's server, the probe reuses addresses, so a port left in TIME_WAIT counts as free."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on --host {host}: {exc.strerror}; pass a name or address of this machine") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError:
                return False
    return True


def pick_port(host: str, port: int, *, chosen: bool) -> int:
    """``port`` when it is free, else (the default port only) the next free one; a busy port the
    user chose is an error naming --port and a free one."""
    if port_free(host, port):
        return port
    spare = next((p for p in range(port + 1, min(port + PORT_TRIES, 65535) + 1) if port_free(host, p)), None)
    if spare is not None and not chosen:
        return spare
    hint = f", e.g. --port {spare}" if spare is not None else ""
    raise ConfigError(f"port {port} on {host} is already in use (another rsseg app or Streamlit?); stop that server or "
                      f"pick another port with --port{hint}")


@click.command(context_settings={"show_default": True})
@click.option("--data-dir", default=".", type=click.Path(file_okay=False), help="Folder whose rasters, *.ckpt checkpoints and *.onnx models the viewer may open (nothing outside it).")
@click.option("--host", default="127.0.0.1", help="Address to bind; the default serves this machine only. 0.0.0.0 exposes the viewer to your network.")
@click.option("--port", default=8501, type=click.IntRange(1, 65535), help="Port to serve on. When the default is busy the next free one is used; a busy port you name is refused.")
@click.option("--max-upload-mb", default=200.0, type=FiniteFloat(min=1, example="200"), help="Largest GeoTIFF a browser may upload.")
@click.option("--max-pixels", default=500_000_000, type=click.IntRange(min=1), help="Largest raster (width x height) the viewer opens or accepts as an upload.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Where predictions and uploads are kept (default: a folder in the system temp dir).")
@click.option("--headless", is_flag=True, help="Do not open a browser window.")
def command(data_dir, host, port, max_upload_mb, max_pixels, cache_dir, headless):
    """Open the map viewer: pick a raster and a checkpoint, run the model, inspect classes, areas and accuracy.

    \b
    Examples:
      rsseg app --data-dir outputs/demo
      rsseg app --data-dir /data/aerial --port 8600 --max-upload-mb 1024
    """
    import os
    import subprocess
    import sys

    from rsseg.viewer import AppSettings, app_script
    from rsseg.viewer.tile_server import TILES_ENV

    env = dict(os.environ)
    if cache_dir:
        env[AppSettings.ENV["cache_dir"]] = cache_dir
    env[AppSettings.ENV["data_dir"]] = data_dir
    env[AppSettings.ENV["max_upload_mb"]] = f"{max_upload_mb:g}"
    env[AppSettings.ENV["max_pixels"]] = str(max_pixels)
    settings = AppSettings.from_env(env)  # fails here, before the server starts, on a missing data dir
    env.update(settings.to_env())
    # checked before the URL is printed: Streamlit would print its own URL, then fail on a busy port
    chosen = click.get_current_context().get_parameter_source("port") is not ParameterSource.DEFAULT
    served = pick_port(host, port, chosen=chosen)
    if served != port:
        click.echo(f"port {port} is in use; serving on {served} instead (choose one with --port)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"warning: serving on {host}: anyone who can reach this address can run models on your files", fg="yellow", err=True)
        # the full-resolution tile server listens on 127.0.0.1 only: remote browsers get the overview overlays
        env[TILES_ENV] = "0"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(app_script()),
        "--server.address", host, "--server.port", str(served),
        "--server.maxUploadSize", str(max(1, round(max_upload_mb))),
        "--server.headless", "true" if headless else "false",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "viewer",
    ]
    click.echo(f"rsseg viewer on http://{host}:{served}  (data directory {settings.data_dir}; Ctrl-C to stop)")
    if os.name == "posix":
        # streamlit replaces this process, so Ctrl-C and kill reach the server itself
        os.execve(sys.executable, cmd, env)
    try:
        code = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
