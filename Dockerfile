# The runtime image: Python, the `serve` extra (locked in deploy/requirements.serve.txt), the service
# package and the checked models/ files; no compiler, no torch, no training code.
#
#   docker build -t chest-cancer-net .      models/ must hold a card that matches its files
#   docker run --read-only --tmpfs /tmp -p 8000:8000 chest-cancer-net
ARG BASE_IMAGE=python:3.11-slim

# Stage 1: the model gate. Fails the build with one line when models/ is missing, does not match its
# card, or has no MODEL_VARIANT file; keeps the card and that one file (the one the service loads), as
# hashed. `--build-arg MODEL_VARIANT=fp32` makes an fp32 image. `model[s]` is a glob, so that without
# models/ the COPY still succeeds and the check says what is missing.
FROM ${BASE_IMAGE} AS model
ARG MODEL_VARIANT=int8
COPY deploy/check_models.py model[s] /models/
RUN cd / && python3 models/check_models.py --variant "$MODEL_VARIANT" models /out/models

# Stage 2: a virtual environment with exactly the locked packages, and the compiled service package.
# pip installs from wheelhouse/ alone when the context has one (offline builds: deploy/smoke_image.sh
# makes one), else from the index. Then removed, as never loaded by the service (sizes before stripping):
# - pip itself, the venv's console scripts, test suites, type stubs, C headers and numpy's build tools
#   (f2py, distutils);
# - ONNX Runtime's offline tools, its ONNX backend API (needs onnx, absent) and its C-API library (the
#   Python binding links the runtime statically: `ldd` shows no libonnxruntime.so); protobuf and
#   flatbuffers (3.5 MB), which only those tools import;
# - polyfactory and Faker (6 MB): litestar imports them only to invent OpenAPI examples when
#   `create_examples=True`, which the service never sets (litestar/_openapi/plugin.py imports lazily);
# - Pillow's AVIF, WebP, FreeType and colour-management modules with the libraries only they link
#   (libavif, libwebp*, libsharpyuv, libfreetype, libharfbuzz, libpng16, libbrotli*, liblcms2: 9 MB): the
#   service opens PNG and JPEG alone (`Image.open(formats=[fmt])`), whose codecs live in _imaging;
# - pydicom's structured-report code tables and bundled test files (9 MB the DICOM decoder never loads);
# - litestar's command-line interface (rich, rich-click, Pygments, markdown-it: 14 MB; the service starts
#   with `python -m service`, never through that CLI).
# Then deploy/strip_elf.py drops the symbol tables and debug sections of the shared objects (17 MB, most
# of it pylibjpeg's codecs; the loader binds through .dynsym, and the import line below loads every
# extension the service uses). The smoke test then proves that the result serves and decodes DICOM.
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY deploy/requirements.serve.txt deploy/strip_elf.py deploy/runtime_rootfs.py wheelhous[e] /wheels/
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --quiet --no-deps "$@" -r /wheels/requirements.serve.txt; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/pip uninstall --quiet --yes pip setuptools; \
    site=$(echo /opt/venv/lib/python3*/site-packages); \
    find /opt/venv/bin -type f ! -name 'python*' -delete; \
    find /opt/venv -depth \( -name tests -o -name '*.pyi' \) -exec rm -rf {} +; \
    rm -rf "$site"/numpy/f2py "$site"/numpy/distutils "$site"/numpy/_core/include \
           "$site"/onnxruntime/tools "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
           "$site"/onnxruntime/backend "$site"/onnxruntime/capi/libonnxruntime.so.* \
           "$site"/google "$site"/protobuf-* "$site"/flatbuffers "$site"/flatbuffers-* \
           "$site"/polyfactory "$site"/polyfactory-* "$site"/faker "$site"/[Ff]aker-* \
           "$site"/PIL/_avif.* "$site"/PIL/_webp.* "$site"/PIL/_imagingft.* "$site"/PIL/_imagingcms.* \
           "$site"/pillow.libs/libavif-* "$site"/pillow.libs/libwebp* "$site"/pillow.libs/libsharpyuv-* \
           "$site"/pillow.libs/libfreetype-* "$site"/pillow.libs/libharfbuzz-* "$site"/pillow.libs/libpng16-* \
           "$site"/pillow.libs/libbrotli* "$site"/pillow.libs/liblcms2-* \
           "$site"/pydicom/sr "$site"/pydicom/data/test_files \
           "$site"/pygments "$site"/[Pp]ygments-* "$site"/rich "$site"/rich-* "$site"/rich_click \
           "$site"/rich_click-* "$site"/markdown_it "$site"/markdown_it_py-* "$site"/mdurl "$site"/mdurl-*; \
    python3 /wheels/strip_elf.py "$site"; \
    /opt/venv/bin/python -c "import onnxruntime, numpy, PIL.Image, PIL._imaging, litestar, uvicorn, yaml._yaml, msgspec, multidict, pydicom.pixels, openjpeg, libjpeg; numpy.ones((4, 4)) @ numpy.ones((4, 4))"; \
    python3 /wheels/runtime_rootfs.py /rootfs /opt/venv; \
    python3 /wheels/strip_elf.py /rootfs/usr /rootfs/lib /rootfs/opt; \
    mkdir -p /venvroot/opt && mv /rootfs/opt/venv /venvroot/opt/
COPY service/ /app/service/
# unchecked-hash: the .pyc files stay valid after COPY --from changes the sources' mtimes.
RUN python3 -m compileall -q --invalidation-mode unchecked-hash /app/service

# Stage 3: the runtime, from scratch: deploy/runtime_rootfs.py's tree (the base's Python and the
# shared libraries ldd says it and the venv load, the standard library less its test suite, IDLE,
# 2to3, ensurepip, pydoc topics and distutils, /etc/passwd with user 10001, /tmp) and no shell,
# package manager, coreutils, perl, locales or iconv modules: 41.5 MB instead of the base's 134 MB.
# Everything the service and its HEALTHCHECK run is Python (the venv's), so nothing else is needed;
# glibc's built-in C.UTF-8 locale serves LANG.
FROM scratch
ARG MODEL_VARIANT=int8
# Two layers: Python and its libraries (41.5 MB) stay the same digest when only the venv changes.
COPY --from=build /rootfs /
COPY --from=build /venvroot /
COPY --from=build /app /app
COPY --from=model /out/models /app/models
# ORT_DISABLE_TELEMETRY: ONNX Runtime 1.32 would otherwise start its telemetry and try to keep a device id
# under $HOME/.cache (a warning on a read-only root).
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/app/models \
    MODEL_VARIANT=${MODEL_VARIANT} \
    LOG_FORMAT=json \
    ORT_DISABLE_TELEMETRY=1
WORKDIR /app
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# No curl in the image: the venv's Python asks /health/ready (an HTTP error or refusal exits non-zero).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
# Exec form: Python is PID 1 and gets SIGTERM itself (the service drains, then exits 0).
ENTRYPOINT ["/opt/venv/bin/python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]
# Last, so that a new commit rebuilds only this layer.
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="chest-cancer-net" \
      org.opencontainers.image.description="Chest CT classifier: ONNX Runtime service" \
      org.opencontainers.image.revision="${GIT_SHA}"
