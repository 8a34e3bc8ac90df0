module github.com/statepipe/statepipe

go 1.25
