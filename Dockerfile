FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kern_tasks ./kern_tasks
# The process types' packages: `celery -A workers worker`, `python -m beat`.
COPY beat ./beat
COPY workers ./workers
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
# No curl in this image: health checks are `kern-tasks health beat|worker` and `python -c`.
# The process type is chosen by the command (see Procfile and docker-compose.yml).
CMD ["celery", "-A", "workers", "worker", "-l", "INFO"]
