"""firewatch: a small edge system used as harness's system under test.

Services (each ``python -m firewatch.<service>``, configured only from the environment):

- ``firewatch.camera``    camera simulator, publishes ``<prefix>/camera/<id>/detection``
- ``firewatch.consensus`` fires ``<prefix>/trigger/fire`` when enough cameras agree in a window
- ``firewatch.pump``      drives the pump relay and valve over RPi.GPIO on a trigger

Every service publishes retained health on ``<prefix>/system/<service>/health``.
"""

SERVICES = ("camera", "consensus", "pump")
