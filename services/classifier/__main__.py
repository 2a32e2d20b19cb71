from services.classifier.service import main

main()
