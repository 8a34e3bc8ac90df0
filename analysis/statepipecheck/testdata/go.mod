module example.com/t

go 1.26.0

require github.com/statepipe/statepipe v0.0.0

replace github.com/statepipe/statepipe => ../../..
