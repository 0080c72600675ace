"""Django settings, all from the environment.

With no DATABASE_URL the app uses SQLite in the data folder, and with no REDIS_URL jobs run in an
in-process worker thread and live updates use the in-memory channel layer, so `make run` works on a bare
laptop. The test suite always sets both and runs against the real Postgres and Redis.
"""

from pathlib import Path

import environ

from webapp.static_headers import add_isolation_headers

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise environ.ImproperlyConfigured("Set SECRET_KEY (or DEBUG=1 for a throwaway dev key).")
    SECRET_KEY = "dev-only-insecure-key"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(DATA_DIR / "media"))).resolve()
MEDIA_URL = "/media/"
# Checkpoints are big and shared by every data dir of one checkout, so they can live elsewhere.
CHECKPOINT_DIR = Path(env.str("CHECKPOINT_DIR", default=str(DATA_DIR / "checkpoints"))).resolve()
DECODER_DIR = Path(env.str("DECODER_DIR", default=str(DATA_DIR / "decoders"))).resolve()

# Where images, thumbnails and embeddings live: the local data dir, or S3-compatible object storage so
# web servers and GPU workers on different machines share them.
STORAGE_BACKEND = env.str("STORAGE_BACKEND", default="local")
if STORAGE_BACKEND == "s3":
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env.str("S3_BUCKET"),
            "endpoint_url": env.str("S3_ENDPOINT_URL", default=None),
            "region_name": env.str("S3_REGION", default=None),
            "access_key": env.str("S3_ACCESS_KEY_ID", default=None),
            "secret_key": env.str("S3_SECRET_ACCESS_KEY", default=None),
            "location": env.str("S3_PREFIX", default=""),
            "default_acl": None,
            "file_overwrite": False,
        },
    }
elif STORAGE_BACKEND == "local":
    _default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
else:
    raise environ.ImproperlyConfigured("STORAGE_BACKEND must be 'local' or 's3'")
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# What the browser downloads per image: "rans" (at most 1 MiB, every fixture mask at IoU >= 0.99),
# "float16" (2 MiB, IoU >= 0.999) or "uint8" (~0.8 MiB, two fixture masks at ~0.97-0.99); see
# benchmarks/RESULTS.md "Payload".
EMBEDDING_DTYPE = env.str("EMBEDDING_DTYPE", default="rans")

SAM_MODEL = env.str("SAM_MODEL", default="mobile_sam")
# "cpu", "cuda" or "auto" (cuda when available).
SAM_DEVICE = env.str("SAM_DEVICE", default="auto")
# "fp32" (exact, the default) or "bf16" (autocast with fp32 LayerNorm; for SAM ViT models on a GPU; see
# benchmarks/RESULTS.md "Encoder" for what it does to masks). SAM_COMPILE: torch.compile the encoder.
SAM_PRECISION = env.str("SAM_PRECISION", default="fp32")
SAM_COMPILE = env.bool("SAM_COMPILE", default=False)
# On a GPU, one job encodes up to this many queued images in one forward pass.
EMBED_BATCH_SIZE = env.int("EMBED_BATCH_SIZE", default=8)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "channels",
    "segmentation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "segmentation.context_processors.model_status",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: a job that must never be lost is acknowledged only once it has finished, and goes back to
# the queue when its worker dies.
CELERY_BROKER_URL = REDIS_URL or None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # A job not acknowledged this long after delivery goes back to the queue: above the longest job.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=900),
    # Two priority lists per queue: 0 for the image someone has open, 5 for the bulk backlog. Redis
    # keeps them as the lists "gpu" and "gpu:5", and workers always empty the first one first.
    "priority_steps": [0, 5],
    "sep": ":",
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"segmentation.tasks.embed_image": {"queue": "gpu"}}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "requeue-stale-embedding-jobs": {
        "task": "segmentation.tasks.requeue_stale_jobs",
        "schedule": env.float("STALE_SWEEP_SECONDS", default=60.0),
    },
    "delete-orphan-files": {
        "task": "segmentation.tasks.delete_orphan_files",
        "schedule": env.float("ORPHAN_SWEEP_SECONDS", default=3600.0),
    },
}
# A stored file that no row refers to (its process died between writing it and committing the row)
# is deleted once it is this old; younger ones may belong to an upload or job still in flight, so
# this must stay above the longest request and job. `manage.py delete_orphan_files` runs it by hand.
ORPHAN_GRACE_SECONDS = env.int("ORPHAN_GRACE_SECONDS", default=86400)
# The database is the source of truth: an image still queued/embedding this long after its last
# change has lost its job (dead worker, flushed broker) and is queued again.
STALE_JOB_SECONDS = env.int("STALE_JOB_SECONDS", default=600)
GPU_QUEUE = "gpu"
# The Redis lists behind GPU_QUEUE, one per priority step (see CELERY_BROKER_TRANSPORT_OPTIONS).
GPU_QUEUE_KEYS = ("gpu", "gpu:5")
INTERACTIVE_PRIORITY, BULK_PRIORITY = 0, 5

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
WHITENOISE_MIMETYPES = {".mjs": "text/javascript", ".wasm": "application/wasm"}
WHITENOISE_ADD_HEADERS_FUNCTION = add_isolation_headers

# Upload limits: checked on the bytes, not the file name or Content-Type.
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=50 * 1024 * 1024)
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=100_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "segmentation.api_errors.json_error_handler",
    # `?format=` belongs to the export endpoint, not to DRF's renderer negotiation.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "SAM annotator API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
