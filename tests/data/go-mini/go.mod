module example.com/gomini

go 1.19
