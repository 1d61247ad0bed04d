from django.urls import path

from apps.backups.apis import BackupCreateView

urlpatterns = [
    path("performance/backup", BackupCreateView.as_view(), name="performance-backup"),
]
