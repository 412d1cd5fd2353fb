"""Control plane of the Kamailio edge: worker status, drain/enable, add/remove (docs/dispatcher.md)."""
