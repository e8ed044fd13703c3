module appliancekit/updater

go 1.19
