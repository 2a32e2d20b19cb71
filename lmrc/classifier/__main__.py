from lmrc.classifier.service import main

main()
