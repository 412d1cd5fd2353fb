"""SIPp scenarios shipped with the load-test harness (data only; see README lines in each XML)."""
