module github.com/swallowkeeper/swallowkeeper

go 1.26
