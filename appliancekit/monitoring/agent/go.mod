module appliancekit/monitoring/agent

go 1.19
