from avdet.entry import main

main()
