"""The core manager. Imports nothing from appliance's outer layers and touches nothing outside:
it defines the protocols (Runner, Clock, ...) that the composition root implements."""
