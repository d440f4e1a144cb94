"""gunicorn entry point for the testbed's OpenStack WSGI apps.

``gunicorn testbed_wsgi:application`` with ``VCLUSTER_TESTBED_APP`` naming the
module that builds the real app (``keystone.wsgi.api``, ``placement.wsgi.api``,
``glance.wsgi.api``, ``nova.wsgi.osapi_compute``, ``fake_neutron``).

The OpenStack apps parse ``sys.argv`` with oslo.config when they are imported
and would choke on gunicorn's own arguments, so they are cleared first.
"""

import importlib
import os
import sys

sys.argv = sys.argv[:1]
application = importlib.import_module(os.environ["VCLUSTER_TESTBED_APP"]).application
