module appliancekit/content-sync

go 1.19
