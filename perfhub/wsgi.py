import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "perfhub.settings")

django_application = get_wsgi_application()

# Imported once Django is set up: it reads the settings and URLconf.
from apps.vitals.wsgi import BeaconApplication  # noqa: E402

# Beacons are answered before Django's handler; everything else goes to it.
application = BeaconApplication(django_application)
